"""hotelid page sections: the honesty banner, the study's 2x2 (trained with / without
masks x tested on clean / occluded photographs) with paired differences, and how to run on
the real data. Rendered from records only; fixture runs are never mixed with real ones."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.stats import norm

from cvbench.aggregate import clean_records, test_set_id
from cvbench.format import md_table
from cvbench.methods import HIDDEN_PARAMS
from cvbench.metrics import paired_bootstrap_diff
from cvbench.report import Page
from cvbench.results import RunRecord
from cvbench.tasks import get_task

from .reader import FIXTURE_LABEL

SIDES = ("train_occlusion", "test_occlusion")


def _cell(recs: list[RunRecord]) -> str:
    """top-1 · top-5 · MAP@5 of one cell: the value, or mean ± sd over seeds (hold-out splits)."""
    parts = []
    for name, key in (("top-1", "accuracy"), ("top-5", "top5_accuracy"), ("MAP@5", "map5")):
        v = np.array([x for x in (r.metric(key) for r in recs) if x is not None])
        if not len(v):
            parts.append(f"{name} –")
        elif len(v) == 1:
            parts.append(f"{name} {v[0]:.3f}")
        else:
            parts.append(f"{name} {v.mean():.3f} ± {v.std(ddof=1):.3f}")
    return " · ".join(parts)


def _paired_effects(cells: dict[tuple[str, str], dict[int, RunRecord]]) -> list[str]:
    """The 2x2's three questions as paired top-1 differences: within each seed (the same test
    items) a paired bootstrap; across seeds (different hold-out splits) the mean difference,
    its resamples averaged over seeds."""
    out = []
    for (a, b, what) in (
        (("none", "masks"), ("none", "none"), "occluded minus clean test, trained without masks"),
        (("masks", "masks"), ("none", "masks"), "with minus without masks in training, occluded test"),
        (("masks", "none"), ("none", "none"), "with minus without masks in training, clean test"),
    ):
        diffs, samples, n = [], [], 0
        for seed in sorted(set(cells.get(a, {})) & set(cells.get(b, {}))):
            ra, rb = cells[a][seed], cells[b][seed]
            ta, pa = np.asarray(ra.y_true()), np.asarray(ra.y_pred())
            tb, pb = np.asarray(rb.y_true()), np.asarray(rb.y_pred())
            if len(ta) == 0 or len(ta) != len(tb) or (ta != tb).any():
                continue
            d = paired_bootstrap_diff(pa == ta, pb == tb, seed=seed, samples=True)
            diffs.append(d["diff"])
            samples.append(d["samples"])
            n += len(ta)
        if not diffs:
            continue
        mean, pooled = float(np.mean(diffs)), np.mean(samples, axis=0)
        lo, hi = np.quantile(pooled, [0.025, 0.975])
        sd = float(np.std(pooled))
        p = float(2 * norm.sf(abs(mean) / sd)) if sd > 0 else (1.0 if mean == 0 else 0.0)
        seeds = f"mean of {len(diffs)} hold-out splits, " if len(diffs) > 1 else ""
        out.append(f"{what}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}], p = {p:.2f} ({seeds}{n} test images in all)")
    return out


def _test_set(rec: RunRecord) -> dict:
    used = rec.data.get("test_used") or {}
    occ = used.get("occlusion")
    if occ:
        return {**occ, "fingerprint": used.get("fingerprint")}
    return dict(rec.info.get("test_set") or {})


def occlusion_tables(records: list[RunRecord]) -> str:
    """One 2x2 table (trained without / with masks x tested on clean / occluded) per method
    configuration and data variant, from records alone; incomplete tables show dashes."""
    groups: dict[tuple, dict[tuple[str, str], dict[int, RunRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if not all(k in r.conditions for k in SIDES):
            continue
        rest = tuple(sorted((k, repr(v)) for k, v in r.params.items() if k not in HIDDEN_PARAMS))
        groups[(r.label, r.method, rest, r.variant)][tuple(r.conditions[k] for k in SIDES)][r.seed] = r
    if not groups:
        return ""
    varying: dict[tuple, set[str]] = defaultdict(set)  # params that differ within a label
    by_label: dict[tuple, list[dict]] = defaultdict(list)
    for label, method, rest, _variant in groups:
        by_label[(label, method)].append(dict(rest))
    for lm, rests in by_label.items():
        for name in set().union(*rests):
            if len({r.get(name) for r in rests}) > 1:
                varying[lm].add(name)
    out = []
    for (label, method, rest, variant), cells in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        any_rec = next(iter(next(iter(cells.values())).values()))
        proto = (any_rec.budget or {}).get("protocol")
        shown = ", ".join(f"{k}={v}" for k, v in rest if k in varying[(label, method)])
        seeds = sorted({s for c in cells.values() for s in c})
        out.append(f"### {label} (`{method}`{', ' + shown if shown else ''}, seeds {', '.join(map(str, seeds))})\n")
        out.append(f"Data: {variant}." + (f" Budget: {proto}." if proto else "") + "\n")
        rows = [[name] + [_cell(list(c.values())) if c else "not run"
                          for c in (cells.get((train_side, t)) for t in ("none", "masks"))]
                for train_side, name in (("none", "without masks"), ("masks", "with masks"))]
        out.append(md_table(["trained \\ tested", "clean test images", "occluded test images"], rows))
        diffs = _paired_effects(cells)
        if diffs:
            out.append("Paired bootstrap differences in top-1 accuracy (same test items, 1000 "
                       "resamples of each hold-out split, averaged over the splits; 95% interval, "
                       "and p for no difference from the resamples' normal approximation):\n")
            out.extend(f"- {d}" for d in diffs)
            out.append("")
        occ = next((next(iter(c.values())) for (tr, te), c in cells.items() if te == "masks" and c), None)
        test_set = _test_set(occ) if occ else {}
        if test_set:
            out.append(f"Occluded test set: {test_set.get('source')}, fill {test_set.get('fill')}, "
                       f"mean area covered {test_set.get('covered_mean')}, seed {test_set.get('seed')}.\n")
        trained = next((next(iter(c.values())) for (tr, te), c in cells.items() if tr == "masks" and c), None)
        aug = (trained.data.get("train_augment") if trained else None) or {}
        if aug:
            out.append(f"Masks pasted in training: {aug.get('source')}, fill {aug.get('fill')}, "
                       f"{aug.get('how')}.\n")
    return "\n".join(out)


def chance_and_caveat(records: list[RunRecord]) -> str:
    """The chance level of this data beside the study's, and how few queries a split has."""
    n_classes = len(records[0].data.get("classes") or records[0].data["test"].get("class_counts") or {})
    if not n_classes:
        return ""
    sets = {test_set_id(r): r.test_n for r in records if r.conditions.get("test_occlusion", "none") == "none"}
    sizes = sorted(set(sets.values()))
    chance_map5 = sum(1 / k for k in range(1, min(5, n_classes) + 1)) / n_classes
    return (f"**Chance here, and how small the test is.** These photographs hold {n_classes} hotels: "
            f"random guessing gives top-1 accuracy 1/{n_classes} = {100 / n_classes:.1f}% and MAP@5 "
            f"{chance_map5:.3f} (the study's 0.032% was for 3,116 hotels; the two are not comparable). "
            f"A hold-out split has {'/'.join(map(str, sizes))} test queries; the runs here use "
            f"{len(sets)} split(s), {sum(sets.values())} queries in all. One query is "
            f"{100 / max(sizes):.1f} points of top-1 on one split, so differences of a few points "
            "are noise; the intervals say how much.\n")


def section_occlusion(page: Page) -> str:
    """The honesty banner, the 2x2 occlusion tables, and how to run on real data. Clean test
    images only (besides the occlusion): a run under a test-image corruption shares its
    occlusion cell and seed with a clean one, and would replace it (the robustness section
    shows those)."""
    records = clean_records(page.records)
    fixture = [r for r in records if r.is_fixture]
    real = [r for r in records if not r.is_fixture]
    lines = ["## Occlusion study: trained with / without masks x tested on clean / occluded\n"]
    if not real:
        lines.append(
            f"**No run on real photographs exists yet.** All {len(fixture)} runs on this page come from "
            f"the {FIXTURE_LABEL}: procedural rooms made by `cvbench data fixture hotelid`. They "
            "show that the pipeline works end to end; they say nothing about recognising real "
            "hotels or about the study's 3.75% accuracy.\n")
    else:
        lines.append(f"{len(real)} runs on real photographs; {len(fixture)} on the generated fixture "
                     "(tables kept apart by their data line). The photographs are what the data line "
                     "says, not necessarily Hotel-ID 2022 itself. Without `train_masks/` in the data, "
                     "occluders are the project's generated shapes, and each table says so.\n")
    lines.append("Cells: top-1 accuracy · top-5 accuracy · MAP@5 (Kaggle's metric: 1/rank of the "
                 "true hotel within the top 5, else 0). The study reported 3.75% accuracy both "
                 "with and without masks (VGG-16, 147,026,796 parameters); random guessing over "
                 "3,116 hotels gives 0.032%. Its precision 0.96 / recall 0.0375 / F1 0.0027 do not fit "
                 "together ([docs/studies.md](../docs/studies.md#hotelid)); here every metric is computed from the stored predictions.\n")
    if real:
        lines.append(chance_and_caveat(real))
    for title, recs in (("Real photographs", real), ("Generated fixture (not Hotel-ID data)", fixture)):
        tables = occlusion_tables(recs)
        if tables:
            lines.append(f"### {title}\n" if real else "")
            lines.append(tables)
    lines.append("## Running it on the real data\n")
    lines.append("```\n" + get_task("hotelid").fetch_help + "\n```\n")
    lines.append("The study's protocol (VGG-16 from scratch, 224 px, Adam 1e-3, batch 32, "
                 "150 epochs x 100 steps) is the suite's `gpu_only` block: it runs only with "
                 "`--device cuda`. Without the download, `cvbench data fixture hotelid DEST` "
                 "writes the generated fixture to DEST/hotelid and `cvbench suite hotelid --data-dir DEST` runs on "
                 "it; every such record says GENERATED FIXTURE in its data variant.\n")
    return "\n".join(lines)


SECTIONS = {"occlusion": section_occlusion}
