"""Group-paired comparisons, for any task that declares one: runs that differ only in what
the task's `[report.comparison]` table varies (e.g. FairFace's training composition and
mitigation) form a comparison family; their per-group accuracies (stratified by the task's
group key, e.g. race, and its cells, e.g. race x gender) are compared with a paired bootstrap
of the test items. Statistics only; report.py formats them.

A page-like object (`.task` with its `comparison` config, `.records`) is all these need.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from .aggregate import clean_records, task_classes
from .format import values_of
from .methods import HIDDEN_PARAMS
from .metrics import group_bootstrap, group_statistics
from .results import RunRecord

# A task's `[report.comparison]` table names what a comparison varies (parameters and
# conditions, e.g. composition and mitigation), the reference and contrast variants, the
# group key the bootstrap stratifies by, and pretty names for variant values. Runs that
# differ only in those (and the seed) form one comparison family.
N_BOOT = 2000


def comparison_config(page) -> dict[str, Any]:
    return dict(page.task.comparison or {})


def variant_name(page, rec: RunRecord) -> str:
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


def variant_rank(page, rec: RunRecord) -> tuple:
    cfg = comparison_config(page)
    order = {v: i for i, v in enumerate(cfg.get("order", ()))}
    vary = list(cfg.get("vary", ()))
    values = values_of(rec)
    first = values.get(vary[0]) if vary else None
    return ((order.get(first, len(order)) if first is not None else len(order) + 1),
            tuple(str(values.get(k) or "") for k in vary[1:]), str(first))


def comparison_families(page) -> dict[tuple, list[RunRecord]]:
    """Records that differ only in the task's compared conditions (`vary`), on clean test
    images: a run under a test-image corruption is the robustness section's (the study's
    comparison is of clean test sets; five corruptions would repeat every table five times)."""
    vary = set(comparison_config(page).get("vary", ()))
    fams: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in clean_records(page.records):
        fixed = tuple(sorted((k, repr(v)) for k, v in values_of(r).items()
                             if k not in vary and k not in HIDDEN_PARAMS and k != "budget_clock"))
        fams[(r.method, r.test_fingerprint, r.train_n, fixed)].append(r)
    return fams


TITLE_PARAMS = ("model", "width", "image_size", "epochs", "size", "k", "metric", "vocab_size",
                "max_side", "step")


def family_title(page, recs: list[RunRecord]) -> str:
    """Method plus its defining parameters (and any other that differs between families)."""
    vary = set(comparison_config(page).get("vary", ())) | set(HIDDEN_PARAMS) | {"budget_clock"}
    r = recs[0]
    same_method = [x for x in page.records if x.method == r.method]
    varying = {k for x in same_method for k, v in x.params.items()
               if k not in vary and repr(v) != repr(r.params.get(k))}
    names = [k for k in TITLE_PARAMS if k in r.params] + sorted(varying - set(TITLE_PARAMS))
    shown = ", ".join([f"{k}={r.params.get(k)}" for k in names]  # a family's fixed conditions
                      + [f"{k}={v}" for k, v in sorted(r.conditions.items()) if k not in vary])
    return f"`{r.method}`" + (f" ({shown}, N={r.train_n})" if shown else f" (N={r.train_n})")


def family_order(fams) -> list[tuple]:
    return sorted(fams, key=lambda k: (k[0], k[2], str(k[3])))


def same_truth(recs: list[RunRecord]) -> np.ndarray | None:
    y = np.asarray(recs[0].y_true())
    for r in recs[1:]:
        other = np.asarray(r.y_true())
        if other.shape != y.shape or (other != y).any():
            return None
    return y


def groups_of(recs: list[RunRecord], key: str) -> list[str] | None:
    """Per-item test groups `key` from the first record that stored them."""
    return next((g for g in (r.test_groups(key) for r in recs) if g is not None), None)


def paired_quantities(page, recs: list[RunRecord]) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    """[(quantity, observed (R,), bootstrap (R, B))] for R runs on the same test items:
    overall and per-group accuracy, worst group, gap and std, stratified by the
    comparison's group key (and its cells, e.g. race × gender, where recorded)."""
    cfg = comparison_config(page)
    y_true = same_truth(recs)
    if y_true is None:
        return None
    correct = np.stack([np.asarray(r.y_pred()) == y_true for r in recs])
    key = cfg.get("strata", "label")
    names = list(task_classes(page.task, recs))
    if key == "label":
        strata = np.asarray(names, dtype=object)[y_true].astype(str)
    elif groups_of(recs, key) is not None:
        strata = np.asarray(groups_of(recs, key))
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
    other = groups_of(recs, cells[1]) if cells else None
    if other is not None and len(other) == len(y_true):
        combo = np.char.add(np.char.add(strata.astype(str), " / "), np.asarray(other).astype(str))
        cb, cp = group_bootstrap(correct, combo, n_boot=N_BOOT, seed=0), group_statistics(correct, combo)
        quantities += [(f"worst {what} × {cells[1]}", cp, cb, "min", None),
                       (f"{what} × {cells[1]} gap", cp, cb, "gap", None)]
    out = []
    for name, pt, bt, k, j in quantities:
        out.append((name, pt[k] if j is None else pt[k][:, j], bt[k] if j is None else bt[k][:, j, :]))
    return out


