"""retinopathy page sections: QWK (primary) beside the source study's per-grade table and
its averaged one-vs-rest "accuracy", plain 5-way accuracy, referable-DR (grade >= 2)
sensitivity/specificity, the trivial all-zeros predictor and the literature the study cites.
"""

from __future__ import annotations

import numpy as np

from cvbench.format import fmt, md_table
from cvbench.report import Page
from cvbench.results import RunRecord

from .protocol import EYEPACS_GRADE_COUNTS, all_zeros_metrics, qwk_at_eyepacs_mix
from .reader import GRADES

# Cited by the source study (docs/studies.md); other data, splits and resolutions: not our runs.
LITERATURE = (
    ("ResNet", "QWK", 0.51),
    ("Deeply supervised ResNet", "QWK", 0.73),
    ("Zoom-in-Net (single model)", "QWK", 0.849),
    ("Zoom-in-Net (ensemble)", "QWK", 0.854),
)
STUDY_CLAIMS = (
    ("Source study, DenseNet-201 (claimed)", "mean one-vs-rest accuracy", "0.921-0.926"),
    ("Source study, DenseNet-201 (its training logs)", "5-way accuracy", "0.81"),
)


def _f(x, digits: int = 3) -> str:
    return fmt(None if x is None else float(x), digits)


_table = md_table


def _with_ci(m: dict, name: str) -> str:
    ci = m.get(f"{name}_ci")
    return _f(m.get(name)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _grading_row(label: str, family: str, m: dict, note: str = "") -> list[str]:
    ref = m.get("referable") or {}
    weighted = qwk_at_eyepacs_mix(*_labels_preds(m)) if "qwk_eyepacs" not in m and m.get("confusion") else None
    return [label + note, family, _with_ci(m, "qwk"),
            _with_ci(m, "qwk_eyepacs") if "qwk_eyepacs" in m else _f(weighted) + " (from the confusion matrix; no interval)",
            _f(m.get("accuracy")), _f(m.get("mean_ovr_accuracy")), _f(m.get("balanced_accuracy")),
            _f(ref.get("sensitivity")), _f(ref.get("specificity"))]


def _labels_preds(m: dict) -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction per item, rebuilt from a confusion matrix (order is irrelevant to QWK)."""
    cm = np.asarray(m["confusion"], dtype=np.int64)
    t, p = np.nonzero(cm)
    reps = cm[t, p]
    return np.repeat(t, reps), np.repeat(p, reps)


def grade_mix(y_true: list[int]) -> str:
    counts = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=len(GRADES))
    n = max(1, int(counts.sum()))
    return " / ".join(f"{c} ({100 * c / n:.1f}%)" for c in counts)


def _per_grade_table(m: dict) -> str:
    rows = []
    per = m.get("per_class", {})
    for grade, name in enumerate(GRADES):
        p = per.get(name, {})
        rows.append([f"{grade} {name}", _f(p.get("precision")), _f(p.get("recall")),
                     _f(p.get("specificity")), _f(p.get("f1")), _f(p.get("ovr_accuracy")),
                     str(p.get("support", "–"))])
    if per:
        mean = {k: np.mean([per[n].get(k, 0.0) for n in GRADES if n in per])
                for k in ("precision", "recall", "specificity", "f1", "ovr_accuracy")}
        rows.append(["mean (unweighted)", *(_f(mean[k]) for k in
                     ("precision", "recall", "specificity", "f1", "ovr_accuracy")), ""])
    return _table(["grade", "precision", "sensitivity", "specificity", "F1",
                   "one-vs-rest accuracy", "support"], rows)


def _confusion_table(m: dict) -> str:
    cm = m.get("confusion") or []
    rows = [[f"**{g}**", *(str(c) for c in row)] for g, row in enumerate(cm)]
    return _table(["true \\ predicted", *(str(g) for g in range(len(GRADES)))], rows)


def section_grading(page: Page) -> str:
    """Grading metrics, the study's per-grade table, confusion tables, ordinal thresholds,
    exposure screening and the literature, from run records only."""
    records: list[RunRecord] = page.records
    if not records:
        return ""
    best = [row.first for row in page.table.rows]  # each row's configuration, its first seed
    mix = grade_mix(best[0].y_true()) if best[0].y_true() else "–"
    released = " / ".join(f"{c} ({100 * c / sum(EYEPACS_GRADE_COUNTS):.1f}%)" for c in EYEPACS_GRADE_COUNTS)
    out = ["## Grading metrics (every row of the table above: its configuration's first seed)\n",
           f"**The test set's grade mix (grades 0 / 1 / 2 / 3 / 4): {mix}.** QWK depends on it. "
           f"EyePACS as released (35,126 training images) is {released}: the shared subset is "
           "disease-enriched. *QWK at EyePACS mix* weighs each test item by (released share of "
           "its grade) / (test share of its grade), so that the weighted mix equals the released "
           "one; the literature's QWKs below and Kaggle's leaderboard were measured at the natural "
           "mix, so that column is the one to hold against them (the source study itself reports "
           "accuracy, not QWK). Intervals: bootstrap by patient (both eyes move together).\n",
           "QWK = quadratic weighted kappa (primary). *Study's accuracy* = the mean of the five "
           "one-vs-rest accuracies, which the source study reports as \"accuracy\"; it is much "
           "higher than plain 5-way accuracy because each one-vs-rest problem is dominated by "
           "true negatives. Referable DR = grade >= 2.\n"]
    rows = [_grading_row(r.label, r.family, r.metrics) for r in best]
    if not any(r.method == "majority-class" for r in records):
        y_true = best[0].y_true()
        rows.append(_grading_row("all-zeros predictor", "reference", all_zeros_metrics(y_true),
                                 " (computed from the test labels, not a run)"))
    out.append(_table(["method", "family", "QWK [95% CI] (this test mix)", "QWK at EyePACS mix [95% CI]",
                       "5-way accuracy", "study's accuracy (mean OvR)",
                       "balanced acc.", "referable sens.", "referable spec."], rows))

    for row, _n, _how in page.table.headlines:  # each family's headline, in the study's format
        top = row.first
        out.append(f"## Per-grade table: {row.family} headline ({top.label}, seed {top.seed}), "
                   "in the study's format\n")
        out.append(_per_grade_table(top.metrics))
    out.append("## Confusion matrices as tables (rows = true grade, columns = predicted)\n")
    for r in best:
        out.append(f"**{r.label}** (QWK {_f(r.metrics.get('qwk'))})\n")
        out.append(_confusion_table(r.metrics))

    ordinal = [r for r in best if isinstance(r.info.get("ordinal"), dict)]
    if ordinal:
        out.append("## Ordinal models: QWK thresholds (fitted on training-side data, never the test split)\n")
        orows = []
        for r in ordinal:
            o = r.info["ordinal"]
            orows.append([r.label, ", ".join(_f(t, 2) for t in o.get("thresholds", [])),
                          _f(o.get("val_qwk_default")), _f(o.get("val_qwk_fitted")),
                          str(o.get("val_n", "–")), str(o.get("note") or "patient-level validation split")])
        out.append("Fitted-threshold QWK is measured on the data the thresholds were fitted on "
                   "(optimistic); the test-split QWK above is the honest number.\n")
        out.append(_table(["method", "thresholds", "val QWK at 0.5/1.5/2.5/3.5",
                           "val QWK at fitted", "val n", "fitted on"], orows))

    exposure = best[0].data["train"].get("exposure"), best[0].data["test"].get("exposure")
    if all(isinstance(e, dict) for e in exposure):
        tr, te = exposure
        out.append("## Exposure screening (the study's rule)\n")
        out.append("Under-exposed: >= 90% of grey values in [0, 30]; over-exposed: >= 80% in "
                   "[225, 255]. Flagged images are counted, not removed.\n")
        out.append(_table(["side", "checked", "under-exposed", "over-exposed"],
                          [["train", str(tr.get("checked")), str(tr.get("under")), str(tr.get("over"))],
                           ["test", str(te.get("checked")), str(te.get("under")), str(te.get("over"))]]))

    out.append("## Literature (cited by the source study; not our runs)\n")
    out.append("Reported on the full Kaggle EyePACS data with other splits and resolutions; "
               "they are context, not comparable numbers.\n")
    lit = [[name, metric, _f(v)] for name, metric, v in LITERATURE]
    lit += [[name, metric, v] for name, metric, v in STUDY_CLAIMS]
    out.append(_table(["model", "metric", "reported"], lit))
    return "\n".join(out)


def overview_note(page: Page) -> str:
    """The test set's share of grade 0 beside EyePACS's (for the index's overview)."""
    y = next((r.y_true() for r in page.records if r.y_true()), None)
    if not y:
        return ""
    share = float(np.mean(np.asarray(y) == 0))
    released = EYEPACS_GRADE_COUNTS[0] / sum(EYEPACS_GRADE_COUNTS)
    return f"test mix {100 * share:.1f}% grade 0, EyePACS {100 * released:.1f}%"


SECTIONS = {"grading": section_grading}
