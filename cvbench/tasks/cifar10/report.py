"""cifar10 page sections: the training budget of every deep run beside the protocol the
studies used (so a few CPU epochs are never read as the 200-epoch protocol), and the studies'
claims as claims."""

from __future__ import annotations

from cvbench.aggregate import clean_records
from cvbench.format import fmt, md_table
from cvbench.report import Page

# The studies' own numbers (docs/studies.md): claims, not our measurements.
STUDY_CLAIMS = (
    ("Study A: SE-ResNet [4,4,3], 4,697,742 params, 200 epochs", "test accuracy (claimed)", "0.95"),
    ("Study A: same model", "hidden shifted test set (claimed)", "0.855"),
    ("Study B: myNet (Inception), 6,158,538 params", "validation accuracy (reported)", "0.8898"),
    ("Study B: CIFAR ResNet-18, 11,173,962 params", "validation accuracy (reported)", "0.8986"),
    ("Study B: strong baseline", "validation accuracy", "0.84"),
)


def _f(x, digits: int = 3) -> str:
    return fmt(None if x is None else float(x), digits)


def _ran(info: dict, budget: dict) -> str:
    """What training actually did: steps, and epochs (a run stopped inside its first epoch by a
    time budget shows its steps, not '1/30 epochs')."""
    steps, run, planned = info.get("steps"), budget.get("epochs_run"), budget.get("epochs")
    text = f"{steps:,} steps" if isinstance(steps, int) else "–"
    if run is not None and planned is not None:
        text += f" ({run} of {planned} planned epochs begun)" if budget.get("stopped_early") else f" ({run} epochs)"
    return text


def section_budgets(page: Page) -> str:
    deep = [r for r in clean_records(page.records) if r.family == "deep"]  # a corrupted run repeats its fit
    if not deep:
        return ""
    rows = []
    for r in sorted(deep, key=lambda r: -(r.metric("accuracy") or 0.0)):
        info, budget = r.info, r.budget or r.info.get("budget") or {}
        rows.append([
            r.label, r.method + (" (quick)" if r.quick else ""),
            f"{info.get('n_params', 0):,}" if info.get("n_params") else "–",
            budget.get("protocol", "–"),
            _ran(info, budget),
            _f(r.fit_seconds, 0), _f(info.get("train_images_per_s"), 0),
            r.device_name or "–", _f(r.metric("accuracy")),
        ])
    return ("## Training budgets of the deep runs\n\n"
            "The studies trained for 200 epochs on a GPU; runs here state their own budget. "
            "A CPU run of a few epochs or minutes measures that budget, not the studies' "
            "protocol.\n\n" + md_table(
                ["run", "method", "params", "protocol", "training done", "training s (all sessions)",
                 "train img/s", "device", "test accuracy"], rows))


def section_claims(page: Page) -> str:
    out = ["## What the studies claimed (not measured here)\n\n" + md_table(
        ["model / setting", "metric", "value"], [list(c) for c in STUDY_CLAIMS])]
    rows = []
    for r in page.table.robust:
        under = r.mean_under(3)
        if under is None:
            continue
        clean = r.clean.mean() or 0.0
        rows.append([r.clean.label, r.clean.family, f"{clean:.3f}", f"{under[0]:.3f} ({under[2]} corruptions)",
                     f"{under[0] - clean:+.3f}"])
    if rows:
        out.append("### Study A's shifted test set beside our corruptions\n\n"
                   "Study A claims 95% on CIFAR-10's test set and 85.5% on a hidden, shifted test set: a "
                   "drop of 9.5 points. That shifted set was never published, so it cannot be run here: "
                   "the rows below measure the same kind of thing (the same models on the same test "
                   "images, corrupted as CIFAR-10-C corrupts them, severity 3), not the same number.\n\n"
                   + md_table(["model (ours)", "family", "clean accuracy", "mean under corruption",
                               "drop"], rows))
    return "\n".join(out)


SECTIONS = {"budgets": section_budgets, "claims": section_claims}
