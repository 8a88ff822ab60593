"""Building blocks of leaderboard pages: formatting, figures, and the shared page sections.

A task page is a list of sections named in the task's `task.toml` (`[report] sections`).
The shared ones live here (best runs, stage times, confusion matrices, learning curves,
sweeps, group disparity, paired differences, seeds, all runs); a task adds its own in
`cvbench/tasks/<task>/report.py` (SECTIONS). Each section is a function of a `Page` (the
task, its records, where figures go) returning markdown. Sections read `RunRecord`s only:
nothing here asks the method registry or reads data.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .results import BUSY_LOAD, RunRecord

SWEEP_MARK = "†"
HIDDEN_PARAMS = ("device", "n_jobs", "seed", "resume", "joblib_backend")


# ---------------------------------------------------------------- formatting
def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_ci(rec: RunRecord, name: str = "accuracy", digits: int = 4) -> str:
    value = fmt(rec.metric(name), digits)
    ci = rec.interval(name)
    return f"{value} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else value


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(c: Any) -> str:
        return " ".join(str(c).split("\n")).replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "run"


def fmt_budget(rec: RunRecord) -> str:
    b = rec.budget or {}
    parts = []
    if b.get("protocol"):
        parts.append(str(b["protocol"]))
    if b.get("epochs_run") is not None and b.get("epochs") is not None:
        if b["epochs_run"] != b["epochs"] or "epoch" not in str(b.get("protocol", "")):
            parts.append(f"{b['epochs_run']}/{b['epochs']} ep")
    elif b.get("epochs") is not None and "epoch" not in str(b.get("protocol", "")):
        parts.append(f"{b['epochs']} ep")
    if b.get("time_budget_s"):
        cpu = " CPU" if b.get("budget_clock") == "process" else ""
        parts.append(f"≤{fmt_seconds(float(b['time_budget_s']))}{cpu}")
    if b.get("stopped_early"):
        parts.append("stopped early")
    if rec.quick:
        parts.append("quick")
    return ", ".join(parts) or ("quick" if rec.quick else "full")


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def values_of(rec: RunRecord) -> dict[str, Any]:
    """Parameters and conditions of a run in one mapping (what a sweep varies)."""
    return {**rec.params, **rec.conditions}


def varying_params(records: list[RunRecord]) -> list[str]:
    """Parameter and condition names whose value differs between the given records."""
    keys: dict[str, set] = defaultdict(set)
    for r in records:
        for k, v in values_of(r).items():
            if k not in HIDDEN_PARAMS:
                keys[k].add(repr(v))
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


def param_str(rec: RunRecord, names: list[str]) -> str:
    values = values_of(rec)
    return ", ".join(f"{k}={values.get(k)}" for k in names if k in values)


def one_line(rec: RunRecord) -> str:
    """Method name, the parameters that differ from its defaults, conditions, seed, budget."""
    defaults = rec.defaults
    names = [k for k, v in rec.params.items()
             if k not in HIDDEN_PARAMS and (k not in defaults or defaults[k] != v)]
    names += sorted(rec.conditions)
    return (f"`{rec.method}` " + (param_str(rec, names) or "defaults")
            + f"; seed {rec.seed}; {fmt_budget(rec)}")


# ---------------------------------------------------------------- figures
def figure_setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "cvbench", "font.size": 8})
    return plt


def save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def confusion_png(rec: RunRecord, classes: list[str], path: Path, title: str) -> None:
    plt = figure_setup()
    cm = np.asarray(rec.metrics["confusion"], dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row-normalised")
    save_png(fig, path)
    plt.close(fig)


def curves_png(rec: RunRecord, path: Path, title: str) -> bool:
    curves = rec.curves
    epochs = curves.get("epoch")
    if not epochs:
        return False
    plt = figure_setup()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    for key, ax in (("loss", a1), ("acc", a2)):
        for side, style in (("train", "-"), ("val", "--")):
            ys = curves.get(f"{side}_{key}")
            if ys and any(y is not None for y in ys):
                ax.plot(epochs[: len(ys)], ys, style, label=side)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if key == "loss" else "accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- the page context
@dataclass
class Page:
    """What a section sees: the task (its config), its full and quick records, and the
    folder its figures go to (named `figures/<task>/` in the page's links)."""

    task: Any
    records: list[RunRecord]
    quick: list[RunRecord]
    fig_dir: Path
    figures: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.task.primary

    def figure_path(self, name: str) -> tuple[Path, str]:
        """(file to write, link for the page) of a figure; names must be unique per page."""
        if name in self.figures:
            raise ValueError(f"figure name {name!r} used twice on the {self.task.name} page")
        self.figures.append(name)
        return self.fig_dir / name, f"figures/{self.task.name}/{name}"

    def value(self, rec: RunRecord) -> float:
        v = rec.metric(self.primary)
        if v is None:
            v = rec.metric("accuracy")
        return v if v is not None else float("-inf")

    def sorted(self, records: list[RunRecord] | None = None) -> list[RunRecord]:
        recs = self.records if records is None else records
        return sorted(recs, key=lambda r: (-self.value(r), r.label, r.key))

    def best_by_label(self, records: list[RunRecord] | None = None) -> dict[str, RunRecord]:
        best: dict[str, RunRecord] = {}
        for r in self.sorted(records):
            best.setdefault(r.label, r)
        return best

    def timed(self, rec: RunRecord, records: list[RunRecord] | None = None) -> RunRecord:
        """The run whose timings stand for `rec`: the slowest run with its label, quick flag
        and parameters except the method's `feature_cache_params` (e.g. k of a k-NN on
        cached histograms). That run computed the features the others re-used."""
        free = set(rec.feature_cache_params)
        if not free:
            return rec
        recs = self.records if records is None else records

        def fixed(r):
            return ({k: v for k, v in r.params.items() if k not in free}, r.conditions)

        same = [r for r in recs if r.label == rec.label and r.method == rec.method
                and r.quick == rec.quick and fixed(r) == fixed(rec)]
        return max(same or [rec], key=lambda r: r.run_seconds)


def marked(rec: RunRecord) -> str:
    return rec.label + (f" {SWEEP_MARK}" if rec.sweep else "")


SWEEP_NOTE = (f"{SWEEP_MARK} best point of a sweep scored on the test split: a test-selected, "
              "optimistic number; the sweep table shows every point.\n")
TIMED_NOTE = ("Times of a sweep point that re-used cached features (e.g. another k on the same "
              "histograms) are those of the run that computed them.\n")


# ---------------------------------------------------------------- shared sections
def section_best(page: Page) -> str:
    task = page.task
    best = page.best_by_label()
    head = ["method", "family"] + ([task.primary] if task.primary != "accuracy" else [])
    head += ["accuracy [95% CI]", "balanced acc.", "macro-F1", "test n", "fit", "predict/img",
             "device", "budget"]
    rows = []
    for _label, r in sorted(best.items(), key=lambda kv: -page.value(kv[1])):
        t = page.timed(r)
        row = [marked(r), r.family] + ([fmt(r.metric(task.primary))] if task.primary != "accuracy" else [])
        row += [fmt_ci(r), fmt(r.metric("balanced_accuracy")), fmt(r.metric("macro_f1")),
                str(r.test_n), fmt_seconds(t.fit_seconds), f"{t.per_image_ms:.2f} ms",
                r.device_name, fmt_budget(r)]
        rows.append(row)
    out = ["## Best run of each method\n", md_table(head, rows)]
    if any(r.sweep for r in best.values()):
        out.append(SWEEP_NOTE)
    out.append(TIMED_NOTE)
    return "\n".join(out)


def section_stages(page: Page) -> str:
    rows = []
    for label, r in sorted(page.best_by_label().items()):
        t = page.timed(r).timings
        stages = {k: v for k, v in t.items()
                  if k.endswith("_s") and k not in ("fit_s", "predict_s", "total_s") and isinstance(v, (int, float))}
        if stages:
            rows.append([label, ", ".join(f"{k.removesuffix('_s')} {fmt_seconds(v)}" for k, v in sorted(stages.items()))])
    if not rows:
        return ""
    return ("### Runtime per stage (the run of each method that computed its features)\n\n"
            + md_table(["method", "stages"], rows))


def section_confusion(page: Page) -> str:
    out = ["## Confusion matrices (best run of each method)\n"]
    classes = page.records[0].class_names
    for label, r in sorted(page.best_by_label().items()):
        path, link = page.figure_path(f"{slug(label)}-{r.key[:8]}-confusion.png")
        confusion_png(r, classes, path, f"{page.task.name}: {label} ({page.primary} {fmt(page.value(r))})")
        out.append(f"**{label}** — {one_line(r)}\n\n![confusion {label}]({link})\n")
    return "\n".join(out)


def section_curves(page: Page) -> str:
    out = []
    for label, r in sorted(page.best_by_label().items()):
        if not r.curves.get("epoch"):
            continue
        path, link = page.figure_path(f"{slug(label)}-{r.key[:8]}-curves.png")
        if curves_png(r, path, f"{page.task.name}: {label} learning curves"):
            out.append(f"**{label}** ({fmt_budget(r)})\n\n![curves {label}]({link})\n")
    return ("## Learning curves (deep runs)\n\n" + "\n".join(out)) if out else ""


def sweep_tables(records: list[RunRecord], metric: str) -> str:
    """For every suite block that swept parameters or conditions: `metric` over the values."""
    blocks: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.sweep:
            blocks[(r.label, tuple(r.sweep), r.seed)].append(r)
    out = []
    for (label, swept, seed), recs in sorted(blocks.items()):
        if len(recs) < 2:
            continue
        seed_note = f", seed {seed}" if seed else ""
        out.append(f"#### {label}: {metric} over {' × '.join(swept)}{seed_note}\n")
        if len(swept) == 1:
            (k,) = swept
            recs = sorted(recs, key=lambda r: _sort_key(values_of(r).get(k)))
            out.append(md_table([k] + [str(values_of(r).get(k)) for r in recs],
                                [[metric] + [fmt(r.metric(metric)) for r in recs]]))
        else:
            row_key, col_key, *rest = swept
            groups: dict[tuple, list[RunRecord]] = defaultdict(list)
            for r in recs:
                groups[tuple(values_of(r).get(k) for k in rest)].append(r)
            for fixed, grecs in sorted(groups.items(), key=lambda kv: [_sort_key(x) for x in kv[0]]):
                if rest:
                    out.append("_" + ", ".join(f"{k}={v}" for k, v in zip(rest, fixed)) + "_\n\n")
                cols = sorted({values_of(r).get(col_key) for r in grecs}, key=_sort_key)
                rows = sorted({values_of(r).get(row_key) for r in grecs}, key=_sort_key)
                cell = {(values_of(r).get(row_key), values_of(r).get(col_key)): r for r in grecs}
                table = [[f"{row_key}={rv}"] + [fmt(cell[(rv, cv)].metric(metric)) if (rv, cv) in cell else "–"
                                                 for cv in cols] for rv in rows]
                out.append(md_table([f"{row_key} \\ {col_key}"] + [str(c) for c in cols], table))
        out.append("")
    return "\n".join(out)


def section_sweeps(page: Page) -> str:
    sweeps = sweep_tables(page.records, page.primary)
    if not sweeps.strip():
        return ""
    return ("## Sweeps\n\nEach table is one suite block; values are test-split results of every "
            "point of the sweep (a sweep over the test split is a sweep, not a model selection).\n\n"
            + sweeps)


def section_all_runs(page: Page, records: list[RunRecord] | None = None) -> str:
    records = page.records if records is None else records
    task = page.task
    by_label: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_label[r.label].append(r)
    vary = {label: varying_params(recs) for label, recs in by_label.items()}
    rows = []
    for i, r in enumerate(page.sorted(records), 1):
        row = [str(i), r.label, param_str(r, vary[r.label]) or "–", str(r.seed)]
        if task.primary != "accuracy":
            row.append(fmt(r.metric(task.primary)))
        row += [fmt_ci(r), fmt(r.metric("macro_f1")), fmt_seconds(r.run_seconds),
                r.device_type, fmt_budget(r), f"`{r.key[:8]}`"]
        rows.append(row)
    head = ["#", "method", "parameters", "seed"] + ([task.primary] if task.primary != "accuracy" else [])
    head += ["accuracy [95% CI]", "macro-F1", "time", "device", "budget", "run key"]
    if records is page.records:
        return "## All runs\n\n" + md_table(head, rows) + "\n" + load_note(records)
    return md_table(head, rows)


def section_quick(page: Page) -> str:
    if not page.quick:
        return ""
    return ("## Quick runs (smoke tests on a small subset; not results)\n\n"
            + section_all_runs(page, page.quick))


def load_note(records: list[RunRecord]) -> str:
    """Say so when timings were taken on a machine busier than its core count."""
    busy = [r.busy_factor for r in records if r.busy]
    if not busy:
        return ""
    return (f"Timing caveat: {len(busy)} of {len(records)} runs were timed while the machine's "
            f"1-minute load average exceeded {BUSY_LOAD:g}x its core count (up to "
            f"{max(busy):.1f}x; a run's own threads account for about 1x), so their "
            "runtimes are inflated; compare speed with the benchmarks (`make bench`) instead.\n")


SECTIONS: dict[str, Callable[[Page], str]] = {
    "best": section_best,
    "stages": section_stages,
    "confusion": section_confusion,
    "curves": section_curves,
    "sweeps": section_sweeps,
    "all_runs": section_all_runs,
    "quick": section_quick,
}
DEFAULT_SECTIONS = ("best", "stages", "confusion", "curves", "sweeps", "all_runs", "quick")


# ---------------------------------------------------------------- comparisons of variants
# A task's `[report.comparison]` table names what a comparison varies (parameters and
# conditions, e.g. composition and mitigation), the reference and contrast variants, the
# group key the bootstrap stratifies by, and pretty names for variant values. Runs that
# differ only in those (and the seed) form one comparison family.
N_BOOT = 2000


def comparison_config(page: Page) -> dict[str, Any]:
    return dict(page.task.comparison or {})


def variant_name(page: Page, rec: RunRecord) -> str:
    """'biased', 'biased + class-balanced loss', 'all 7000 (no composition)', ..."""
    cfg = comparison_config(page)
    names = cfg.get("names", {})
    values = values_of(rec)
    vary = list(cfg.get("vary", ()))
    head, rest = vary[:1], vary[1:]
    parts = []
    for k in head:
        v = values.get(k)
        parts.append(str(names.get(f"{k}={v}", v)) if v is not None
                     else f"all {rec.train_n} (no {k})")
    for k in rest:
        v = values.get(k)
        if v:
            parts.append(str(names.get(f"{k}={v}", f"{k}={v}")))
    return " + ".join(parts) or rec.label


def variant_rank(page: Page, rec: RunRecord) -> tuple:
    cfg = comparison_config(page)
    order = {v: i for i, v in enumerate(cfg.get("order", ()))}
    vary = list(cfg.get("vary", ()))
    values = values_of(rec)
    first = values.get(vary[0]) if vary else None
    return ((order.get(first, len(order)) if first is not None else len(order) + 1),
            tuple(str(values.get(k) or "") for k in vary[1:]), str(first))


def comparison_families(page: Page) -> dict[tuple, list[RunRecord]]:
    vary = set(comparison_config(page).get("vary", ()))
    fams: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in page.records:
        fixed = tuple(sorted((k, repr(v)) for k, v in values_of(r).items()
                             if k not in vary and k not in HIDDEN_PARAMS and k != "budget_clock"))
        fams[(r.method, r.test_fingerprint, r.train_n, fixed)].append(r)
    return fams


TITLE_PARAMS = ("model", "width", "image_size", "epochs", "size", "k", "metric", "vocab_size",
                "max_side", "step")


def family_title(page: Page, recs: list[RunRecord]) -> str:
    """Method plus its defining parameters (and any other that differs between families)."""
    vary = set(comparison_config(page).get("vary", ())) | set(HIDDEN_PARAMS) | {"budget_clock"}
    r = recs[0]
    same_method = [x for x in page.records if x.method == r.method]
    varying = {k for x in same_method for k, v in x.params.items()
               if k not in vary and repr(v) != repr(r.params.get(k))}
    names = [k for k in TITLE_PARAMS if k in r.params] + sorted(varying - set(TITLE_PARAMS))
    shown = ", ".join(f"{k}={r.params.get(k)}" for k in names)
    return f"`{r.method}`" + (f" ({shown}, N={r.train_n})" if shown else f" (N={r.train_n})")


def _family_order(page: Page, fams) -> list[tuple]:
    return sorted(fams, key=lambda k: (k[0], k[2], str(k[3])))


def section_groups(page: Page) -> str:
    """Max, min, mean, std and gap of accuracy across the groups of every groups:* metric."""
    specs = [m.removeprefix("groups:") for m in page.task.metrics if m.startswith("groups:")]
    if not specs:
        return ""
    order = sorted(page.records, key=lambda r: (r.method, r.label, variant_name(page, r), r.seed))
    rows = []
    for r in order:
        row = [r.label, variant_name(page, r), str(r.seed)]
        for spec in specs:
            s = r.group_summary(spec)
            row += [fmt(s.get(k), 3) for k in ("max", "min", "mean", "std", "gap")]
        rows.append(row)
    head = ["run", "training set", "seed"] + [f"{s.replace('*', '×')} {k}" for s in specs
                                              for k in ("max", "min", "mean", "std", "gap")]
    what = " and ".join(s.replace("*", " × ") for s in specs)
    return ("## Disparity across groups\n\nMax, min, mean, population std and max − min gap of "
            f"test accuracy across the groups of {what}.\n\n" + md_table(head, rows))


def _fmt_diff(d: float, samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    text = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def _same_truth(recs: list[RunRecord]) -> np.ndarray | None:
    y = np.asarray(recs[0].y_true())
    for r in recs[1:]:
        other = np.asarray(r.y_true())
        if other.shape != y.shape or (other != y).any():
            return None
    return y


def _groups_of(recs: list[RunRecord], key: str) -> list[str] | None:
    """Per-item test groups `key` from the first record that stored them."""
    return next((g for g in (r.test_groups(key) for r in recs) if g is not None), None)


def paired_quantities(page: Page, recs: list[RunRecord]) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    """[(quantity, observed (R,), bootstrap (R, B))] for R runs on the same test items:
    overall and per-group accuracy, worst group, gap and std, stratified by the
    comparison's group key (and its cells, e.g. race × gender, where recorded)."""
    from .metrics import group_bootstrap, group_statistics

    cfg = comparison_config(page)
    y_true = _same_truth(recs)
    if y_true is None:
        return None
    correct = np.stack([np.asarray(r.y_pred()) == y_true for r in recs])
    key = cfg.get("strata", "label")
    names = recs[0].class_names
    if key == "label":
        strata = np.asarray(names, dtype=object)[y_true].astype(str)
    elif _groups_of(recs, key) is not None:
        strata = np.asarray(_groups_of(recs, key))
    else:
        return None
    boot, point = group_bootstrap(correct, strata, n_boot=N_BOOT, seed=0), group_statistics(correct, strata)
    what = cfg.get("strata_name", key)
    quantities = [(f"{what} accuracy (overall)", point, boot, "overall", None)]
    where = {g: j for j, g in enumerate(point["groups"])}
    quantities += [(f"accuracy: {g}", point, boot, "per_group", where[g]) for g in names if g in where]
    quantities += [(f"worst {what}", point, boot, "min", None), (f"{what} gap (max − min)", point, boot, "gap", None),
                   (f"{what} std", point, boot, "std", None)]
    cells = cfg.get("cells")
    other = _groups_of(recs, cells[1]) if cells else None
    if other is not None and len(other) == len(y_true):
        combo = np.char.add(np.char.add(strata.astype(str), " / "), np.asarray(other).astype(str))
        cb, cp = group_bootstrap(correct, combo, n_boot=N_BOOT, seed=0), group_statistics(correct, combo)
        quantities += [(f"worst {what} × {cells[1]}", cp, cb, "min", None),
                       (f"{what} × {cells[1]} gap", cp, cb, "gap", None)]
    out = []
    for name, pt, bt, k, j in quantities:
        out.append((name, pt[k] if j is None else pt[k][:, j], bt[k] if j is None else bt[k][:, j, :]))
    return out


def section_paired(page: Page) -> str:
    """Reference vs contrast (and every other variant against both), per family and seed,
    with paired bootstrap intervals of the differences."""
    cfg = comparison_config(page)
    ref, con = cfg.get("reference"), cfg.get("contrast")
    if not ref or not con:
        return ""
    fams = comparison_families(page)
    out = []
    for fk in _family_order(page, fams):
        by_seed: dict[int, list[RunRecord]] = defaultdict(list)
        for r in fams[fk]:
            by_seed[r.seed].append(r)
        for seed, recs in sorted(by_seed.items()):
            recs = sorted(recs, key=lambda r: variant_rank(page, r))
            names = [variant_name(page, r) for r in recs]
            if ref not in names or con not in names or len(set(names)) != len(names):
                continue
            values = paired_quantities(page, recs)
            if values is None:
                continue
            i_ref, i_con = names.index(ref), names.index(con)
            others = [i for i in range(len(recs)) if i not in (i_ref, i_con)]
            out.append(f"### {family_title(page, recs)}, seed {seed}\n")
            rows = [[name, fmt(float(val[i_ref]), 3), fmt(float(val[i_con]), 3),
                     _fmt_diff(float(val[i_con] - val[i_ref]), smp[i_con] - smp[i_ref])]
                    for name, val, smp in values]
            out.append(md_table(["quantity", ref, con, f"{con} − {ref} [95% CI]"], rows))
            for i in others:
                rows = [[name, fmt(float(val[i]), 3),
                         _fmt_diff(float(val[i] - val[i_con]), smp[i] - smp[i_con]),
                         _fmt_diff(float(val[i] - val[i_ref]), smp[i] - smp[i_ref])]
                        for name, val, smp in values]
                out.append(f"**{names[i]}** against {con} (does it recover?) and against {ref} "
                           "(what is left):\n")
                out.append(md_table(["quantity", names[i], f"− {con} [95% CI]", f"− {ref} [95% CI]"], rows))
    if not out:
        return ""
    head = (f"## {cfg.get('title', f'{con} vs {ref}')} (paired bootstrap)\n\n"
            f"Differences in test accuracy between runs of the same model and seed, with 95% "
            f"percentile intervals from {N_BOOT} paired bootstrap resamples of the test items, "
            f"stratified by {cfg.get('strata_name', cfg.get('strata', 'class'))}. Bold: the interval "
            "excludes 0. The interval covers test-set sampling only; seed-to-seed training "
            "variance is shown separately where several seeds ran. Intervals of extremes (worst "
            "group, gap) are rough: the bootstrap of a max or min is biased.\n\n")
    return head + "\n".join(out)


def section_seeds(page: Page) -> str:
    """Mean ± sd over training seeds, and the difference to the reference of the same seed."""
    cfg = comparison_config(page)
    ref = cfg.get("reference")
    spec = cfg.get("strata_name", cfg.get("strata", ""))

    def ms(x: np.ndarray) -> str:
        x = x[np.isfinite(x)]
        if not len(x):
            return "–"
        return f"{x.mean():+.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x[0]:+.3f} (1 seed)"

    fams = comparison_families(page)
    rows = []
    for fk in _family_order(page, fams):
        by_variant: dict[str, list[RunRecord]] = defaultdict(list)
        for r in fams[fk]:
            by_variant[variant_name(page, r)].append(r)
        if max(len(v) for v in by_variant.values()) < 2:
            continue
        title = family_title(page, fams[fk])
        reference = {r.seed: r for r in by_variant.get(ref, [])}
        for name, recs in sorted(by_variant.items(), key=lambda kv: variant_rank(page, kv[1][0])):
            acc = np.array([r.metric("accuracy") for r in recs])
            gap = np.array([r.group_summary(spec).get("gap", np.nan) for r in recs])
            d_acc = np.array([r.metric("accuracy") - reference[r.seed].metric("accuracy")
                              for r in recs if r.seed in reference])
            d_gap = np.array([r.group_summary(spec).get("gap", np.nan)
                              - reference[r.seed].group_summary(spec).get("gap", np.nan)
                              for r in recs if r.seed in reference])
            rows.append([title, name, ", ".join(str(r.seed) for r in sorted(recs, key=lambda r: r.seed)),
                         ms(acc).lstrip("+"), ms(gap).lstrip("+"),
                         ms(d_acc) if name != ref else "–", ms(d_gap) if name != ref else "–"])
    if not rows:
        return ""
    return "## Across training seeds\n\n" + md_table(
        ["model", "training set", "seeds", "accuracy mean ± sd", f"{spec} gap mean ± sd",
         f"acc. − {ref} (same seed)", f"gap − {ref} (same seed)"], rows)


SECTIONS.update({"groups": section_groups, "paired": section_paired, "seeds": section_seeds})


# ---------------------------------------------------------------- rows: configurations over seeds
CHOSEN_MARK = SWEEP_MARK  # a choice made on the test split (best of a sweep, of seeds, of epochs, ...)
DIRTY_MARK = "‡"  # the record came from uncommitted code


def config_id(rec: RunRecord) -> str:
    """What a configuration is: method, parameters and conditions, without the seed."""
    import json

    params = {k: v for k, v in rec.params.items() if k not in HIDDEN_PARAMS}
    return json.dumps([rec.method, params, rec.conditions], sort_keys=True, default=str)


@dataclass
class Row:
    """One configuration of one suite label on one data variant, over its seeds."""

    label: str
    variant: str
    records: list[RunRecord]  # one per seed, by seed
    candidates: int = 1  # configurations this row was chosen from
    chosen_by: str = "only configuration"  # or "validation", "test split"

    @property
    def best(self) -> RunRecord:
        return self.records[0]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    @property
    def family(self) -> str:
        return self.best.family

    @property
    def test_selected(self) -> bool:
        return self.candidates > 1 and self.chosen_by == "test split"

    def values(self, metric: str) -> np.ndarray:
        return np.array([v for v in (r.metric(metric) for r in self.records) if v is not None])

    def mean(self, metric: str) -> float | None:
        v = self.values(metric)
        return float(v.mean()) if len(v) else None

    def run_seconds(self, page: Page) -> float:
        return float(np.mean([page.timed(r).run_seconds for r in self.records]))


def validation_score(rec: RunRecord, metric: str) -> float | None:
    """What the run scored on a validation split carved from its training data, if any."""
    val = rec.info.get("validation") or {}
    if isinstance(val.get("score"), (int, float)):
        return float(val["score"])
    vm = rec.info.get("val_metrics") or {}
    key = "qwk" if metric == "qwk" else "accuracy"
    if isinstance(vm.get(key), (int, float)):
        return float(vm[key])
    curve = [v for v in (rec.curves.get("val_acc") or []) if v is not None]
    return float(curve[-1]) if curve and metric == "accuracy" else None


def label_rows(page: Page, records: list[RunRecord] | None = None) -> list[Row]:
    """For each (label, data variant): its configurations over seeds; the one shown is chosen
    on validation when every configuration has a validation score under the same conditions,
    else by its mean test score (and then marked when there was a choice)."""
    records = page.records if records is None else records
    by_label: dict[tuple[str, str], dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_label[(r.label, r.variant)][config_id(r)].append(r)
    rows = []
    for (label, variant), configs in by_label.items():
        cands = [Row(label, variant, sorted(recs, key=lambda r: r.seed)) for recs in configs.values()]
        chosen_by = "only configuration"
        if len(cands) > 1:
            vals = [[validation_score(r, page.primary) for r in c.records] for c in cands]
            same_conditions = len({json_dump(c.best.conditions) for c in cands}) == 1
            if same_conditions and all(v is not None for vs in vals for v in vs):
                pick = max(range(len(cands)), key=lambda i: float(np.mean(vals[i])))
                chosen_by = "validation"
            else:
                pick = max(range(len(cands)), key=lambda i: _mean_or_inf(cands[i], page))
                chosen_by = "test split"
            row = cands[pick]
        else:
            row = cands[0]
        row.candidates, row.chosen_by = len(cands), chosen_by
        rows.append(row)
    return sorted(rows, key=lambda r: (-_mean_or_inf(r, page), r.label, r.variant))


def json_dump(x: Any) -> str:
    import json

    return json.dumps(x, sort_keys=True, default=str)


def _mean_or_inf(row: Row, page: Page) -> float:
    m = row.mean(page.primary)
    if m is None:
        m = row.mean("accuracy")
    return m if m is not None else float("-inf")


def pooled_interval(records: list[RunRecord], metric: str, n_boot: int = 1000, seed: int = 0
                    ) -> tuple[float, float] | None:
    """95% interval of the seed-mean of `metric` over bootstrap resamples of the test items
    (the same resample for every seed; whole patients for qwk): test-set sampling only."""
    from .metrics import quadratic_weighted_kappa_fast, resample_indices

    if len(records) == 1:
        return records[0].interval(metric)
    y = np.asarray(records[0].y_true())
    if not len(y) or any(np.asarray(r.y_true()).shape != y.shape or (np.asarray(r.y_true()) != y).any()
                         for r in records):
        return None
    preds = np.stack([np.asarray(r.y_pred()) for r in records])
    groups = records[0].test_groups("patient") if metric == "qwk" else None
    draws = resample_indices(len(y), n_boot, seed, groups)
    if metric == "accuracy":
        per_item = (preds == y).mean(0)
        samples = [per_item[i].mean() for i in draws]
    elif metric == "map5":
        tops = [r.top_classes() for r in records]
        if any(t is None for t in tops):
            return None
        rr = []
        for t in tops:
            t = np.asarray(t)
            hit = t == y[:, None]
            rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
            rr.append(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0))
        per_item = np.mean(rr, axis=0)
        samples = [per_item[i].mean() for i in draws]
    elif metric == "qwk":
        k = len(records[0].class_names)
        samples = [np.mean([quadratic_weighted_kappa_fast(y[i], p[i], k) for p in preds]) for i in draws]
    else:
        return None
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return float(lo), float(hi)


def fmt_row_metric(row: Row, metric: str, digits: int = 4) -> str:
    """'0.4071 [0.382, 0.434]' for one seed; '0.4012 ± 0.0061 (3 seeds) [0.385, 0.417]'."""
    mean = row.mean(metric)
    if mean is None:
        return "–"
    ci = pooled_interval(row.records, metric)
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    if len(row.records) == 1:
        return f"{mean:.{digits}f}{ci_text}"
    sd = float(row.values(metric).std(ddof=1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({len(row.records)} seeds){ci_text}"


def row_label(row: Row, headline_choice: bool = False) -> str:
    marks = ""
    if row.test_selected or headline_choice:
        marks += f" {CHOSEN_MARK}"
    if any(r.dirty for r in row.records):
        marks += f" {DIRTY_MARK}"
    return row.label + marks


ROW_NOTE = (f"{CHOSEN_MARK} chosen on the test split: the best of several configurations (sweep "
            "points, epochs, compositions, or methods of a family) by their test score, so the "
            "number is optimistic; the sweep tables show every point. A configuration with several "
            "seeds shows their mean ± sd and the number of seeds; its interval is the bootstrap of "
            "the seed-mean over test items. "
            f"{DIRTY_MARK} the record came from uncommitted code (not reproducible from a revision).\n")


def section_summary(page: Page) -> str:
    """The answer first: the best configuration of each family, then every method's row."""
    task = page.task
    rows = label_rows(page)
    metrics = [task.primary] + (["accuracy"] if task.primary != "accuracy" else [])
    fam_rows: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        fam_rows[(r.family, r.variant)].append(r)
    head = ["family", "method", *(f"{m} [95% CI]" for m in metrics), "test n", "runtime", "device", "budget", "data"]
    table = []
    for (fam, variant), rs in sorted(fam_rows.items(), key=lambda kv: (_family_rank(kv[0][0]), kv[0][1])):
        best = rs[0]
        table.append([fam, row_label(best, headline_choice=len(rs) > 1),
                      *(fmt_row_metric(best, m) for m in metrics), str(best.best.test_n),
                      fmt_seconds(best.run_seconds(page)), best.best.device_name, fmt_budget(best.best),
                      _variant_note(page, variant)])
    out = ["## Best of each family\n", md_table(head, table)]
    head = ["method", "family", *(f"{m} [95% CI]" for m in metrics), "balanced acc.", "macro-F1",
            "seeds", "chosen by", "fit", "predict/img", "budget"]
    table = []
    for r in rows:
        t = page.timed(r.best)
        table.append([row_label(r), r.family, *(fmt_row_metric(r, m) for m in metrics),
                      fmt(r.mean("balanced_accuracy")), fmt(r.mean("macro_f1")),
                      ", ".join(map(str, r.seeds)),
                      r.chosen_by + (f" (of {r.candidates})" if r.candidates > 1 else ""),
                      fmt_seconds(t.fit_seconds), f"{t.per_image_ms:.2f} ms", fmt_budget(r.best)])
    out += ["## Every method\n", md_table(head, table), ROW_NOTE, TIMED_NOTE]
    return "\n".join(out)


def _family_rank(fam: str) -> int:
    order = ("classical", "deep", "pretrained", "baseline")
    return order.index(fam) if fam in order else len(order)


def _variant_note(page: Page, variant: str) -> str:
    variants = {r.variant for r in page.records}
    if "GENERATED FIXTURE" in variant:
        return "generated fixture"
    return "" if len(variants) == 1 else variant[:60]


def cost_figure(page: Page, rows: list[Row], path: Path, title: str) -> bool:
    """The primary metric (with its interval) against runtime (log scale), one point per
    method's shown configuration, coloured by family."""
    pts = [(r, r.mean(page.primary), pooled_interval(r.records, page.primary), r.run_seconds(page))
           for r in rows]
    pts = [p for p in pts if p[1] is not None and p[3] > 0]
    if not pts:
        return False
    plt = figure_setup()
    colours = {"classical": "tab:blue", "deep": "tab:orange", "pretrained": "tab:green", "baseline": "tab:gray"}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    seen = set()
    for r, y, ci, x in sorted(pts, key=lambda p: p[3]):
        fam = r.family
        err = None if ci is None else [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]]
        ax.errorbar([x], [y], yerr=err, fmt="o", color=colours.get(fam, "black"), capsize=2, ms=4,
                    label=None if fam in seen else fam)
        seen.add(fam)
        ax.annotate(r.label[:28], (x, y), fontsize=5, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("runtime of the run (fit + predict), seconds, log scale")
    ax.set_ylabel(page.primary)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)
    return True


def section_picture(page: Page) -> str:
    rows = label_rows(page)
    path, link = page.figure_path(f"{page.task.name}-score-vs-runtime.png")
    if not cost_figure(page, rows, path, f"{page.task.name}: {page.primary} against runtime"):
        return ""
    return (f"![{page.primary} against runtime]({link})\n\nEach point is one method's configuration "
            "as in the table above (mean over seeds), with its 95% interval; runtime on a log scale.\n")


def details(title: str, text: str) -> str:
    """A collapsed block: the detail below the answer."""
    if not text.strip():
        return ""
    return f"<details><summary>{title}</summary>\n\n{text.strip()}\n\n</details>\n"


def _collapsed(name: str, title: str):
    inner = SECTIONS[name]

    def section(page: Page) -> str:
        return details(title, inner(page))

    section.__doc__ = f"{title} (collapsed)"
    return section


SECTIONS.update({
    "summary": section_summary,
    "picture": section_picture,
    "sweeps_details": _collapsed("sweeps", "Sweeps: every point of every swept block"),
    "confusion_details": _collapsed("confusion", "Confusion matrices"),
    "curves_details": _collapsed("curves", "Learning curves"),
    "stages_details": _collapsed("stages", "Runtime per stage"),
    "all_runs_details": _collapsed("all_runs", "All runs"),
    "groups_details": _collapsed("groups", "Disparity across groups, run by run"),
})
DEFAULT_SECTIONS = ("summary", "picture", "sweeps_details", "confusion_details", "curves_details",
                    "stages_details", "all_runs_details", "quick")
