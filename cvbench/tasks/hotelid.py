"""hotelid: hotel recognition with and without occlusion masks (Hotel-ID 2022, FGVC9).

The study's question is a 2x2: a network trained with / without pasted occlusion masks,
tested on clean / occluded photographs. Train side and test side are method parameters
(`train_occlusion`, `test_occlusion`, see deep/hotelid.py), so one suite block sweeps all
four cells and every record says which cell it is. The leaderboard section below is
rendered from records only and never mixes generated-fixture runs with real ones.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data.hotelid import FIXTURE_LABEL, LAYOUT, generate_fixture, load_hotelid
from ..leaderboard import fmt, md_table
from . import Task, register_task

KAGGLE = "hotel-id-to-combat-human-trafficking-2022-fgvc9"
FETCH_HELP = (
    "Hotel-ID 2022 is on Kaggle only (accept the competition rules first):\n"
    f"  kaggle competitions download -c {KAGGLE}\n"
    f"  unzip {KAGGLE}.zip -d $CVBENCH_DATA/hotelid\n"
    "  cvbench data check hotelid\n"
    "  cvbench suite hotelid"
)
OCCLUSION_KEYS = ("train_occlusion", "test_occlusion")


def _is_fixture(rec: dict) -> bool:
    return "GENERATED FIXTURE" in str(rec.get("data", {}).get("variant", ""))


def _cell(rec: dict) -> str:
    m = rec.get("metrics", {})
    return " · ".join(f"{name} {fmt(m.get(key), 3)}" for name, key in
                      (("top-1", "accuracy"), ("top-5", "top5_accuracy"), ("MAP@5", "map5")))


def _paired_effects(cells: dict[tuple[str, str], dict]) -> list[str]:
    """The 2x2's three questions as paired top-1 differences, from the records' predictions."""
    from ..metrics import paired_bootstrap_diff

    def correct(rec):
        p = rec.get("predictions", {})
        return np.asarray(p.get("y_true", [])), np.asarray(p.get("y_pred", []))

    out = []
    for (a, b, what) in (
        (("none", "masks"), ("none", "none"), "occluded minus clean test, trained without masks"),
        (("masks", "masks"), ("none", "masks"), "with minus without masks in training, occluded test"),
        (("masks", "none"), ("none", "none"), "with minus without masks in training, clean test"),
    ):
        ra, rb = cells.get(a), cells.get(b)
        if not ra or not rb:
            continue
        (ta, pa), (tb, pb) = correct(ra), correct(rb)
        if len(ta) == 0 or len(ta) != len(tb) or (ta != tb).any():
            continue
        d = paired_bootstrap_diff(pa == ta, pb == tb)
        out.append(f"{what}: {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}], p = {d['p_value']:.3f} "
                   f"(n = {len(ta)})")
    return out


def occlusion_tables(records: list[dict]) -> str:
    """One 2x2 table (trained without / with masks x tested on clean / occluded) per method
    configuration and data variant, from records alone; incomplete tables show dashes."""
    groups: dict[tuple, dict[tuple[str, str], dict]] = defaultdict(dict)
    for r in records:
        params = r.get("params", {})
        if not all(k in params for k in OCCLUSION_KEYS):
            continue
        rest = tuple(sorted((k, repr(v)) for k, v in params.items()
                            if k not in OCCLUSION_KEYS and k not in ("device", "n_jobs")))
        key = (r.get("label", r["method"]), r["method"], rest, r["data"]["variant"], r.get("seed", 0))
        groups[key][(params["train_occlusion"], params["test_occlusion"])] = r
    if not groups:
        return ""
    varying: dict[tuple, set[str]] = defaultdict(set)  # params that differ within a label
    by_label: dict[tuple, list[dict]] = defaultdict(list)
    for label, method, rest, _variant, _seed in groups:
        by_label[(label, method)].append(dict(rest))
    for lm, rests in by_label.items():
        for name in set().union(*rests):
            if len({r.get(name) for r in rests}) > 1:
                varying[lm].add(name)
    out = []
    for (label, method, rest, variant, seed), cells in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        any_rec = next(iter(cells.values()))
        budget = any_rec.get("budget") or any_rec.get("info", {}).get("budget") or {}
        proto = budget.get("protocol") if isinstance(budget, dict) else None
        shown = ", ".join(f"{k}={v}" for k, v in rest if k in varying[(label, method)])
        out.append(f"### {label} (`{method}`{', ' + shown if shown else ''}, seed {seed})\n")
        out.append(f"Data: {variant}." + (f" Budget: {proto}." if proto else "") + "\n")
        rows = [[name] + [_cell(c) if c else "not run"
                          for c in (cells.get((train_side, t)) for t in ("none", "masks"))]
                for train_side, name in (("none", "without masks"), ("masks", "with masks"))]
        out.append(md_table(["trained \\ tested", "clean test images", "occluded test images"], rows))
        diffs = _paired_effects(cells)
        if diffs:
            out.append("Paired bootstrap differences in top-1 accuracy (same test items, 1000 "
                       "resamples; 95% interval, p for no difference):\n")
            out.extend(f"- {d}" for d in diffs)
            out.append("")
        occ = next((c for (tr, te), c in cells.items() if te == "masks"), None)
        test_set = (occ or {}).get("info", {}).get("test_set")
        if test_set:
            out.append(f"Occluded test set: {test_set.get('source')}, fill {test_set.get('fill')}, "
                       f"mean area covered {test_set.get('covered_mean')}, seed {test_set.get('seed')} "
                       f"(fingerprint {test_set.get('fingerprint')}).\n")
    return "\n".join(out)


def page_sections(records: list[dict], figures_dir: Path) -> str:
    """The hotelid page: the honesty banner, the 2x2 occlusion tables, and how to run on real data."""
    fixture = [r for r in records if _is_fixture(r)]
    real = [r for r in records if not _is_fixture(r)]
    lines = ["## Occlusion study: trained with / without masks x tested on clean / occluded\n"]
    if not real:
        lines.append(
            f"**No real Hotel-ID run exists yet.** All {len(fixture)} runs on this page come from "
            f"the {FIXTURE_LABEL}: procedural rooms made by `cvbench data fixture hotelid`. They "
            "show that the pipeline works end to end; they say nothing about recognising real "
            "hotels or about the study's 3.75% accuracy.\n")
    else:
        lines.append(f"{len(real)} runs on Hotel-ID data; {len(fixture)} on the generated fixture "
                     "(tables kept apart by their data line).\n")
    lines.append("Cells: top-1 accuracy · top-5 accuracy · MAP@5 (Kaggle's metric: 1/rank of the "
                 "true hotel within the top 5, else 0). The study reported 3.75% accuracy both "
                 "with and without masks (VGG-16, 147,026,796 parameters); random guessing over "
                 "3,116 hotels gives 0.032%. Its precision 0.96 / recall 0.0375 / F1 0.0027 do not fit "
                 "together (SEEDS.md); here every metric is computed from the stored predictions.\n")
    for title, recs in (("Hotel-ID data", real), ("Generated fixture (not Hotel-ID data)", fixture)):
        tables = occlusion_tables(recs)
        if tables:
            lines.append(f"### {title}\n" if real else "")
            lines.append(tables)
    lines.append("## Running it on the real data\n")
    lines.append("```\n" + FETCH_HELP + "\n```\n")
    lines.append("The study's protocol (VGG-16 from scratch, 224 px, Adam 1e-3, batch 32, "
                 "150 epochs x 100 steps) is the suite's `gpu_only` block: it runs only with "
                 "`--device cuda`. Without the download, `cvbench data fixture hotelid DEST` "
                 "writes the generated fixture to DEST/hotelid and `cvbench suite hotelid --data-dir DEST` runs on "
                 "it; every such record says GENERATED FIXTURE in its data variant.\n")
    return "\n".join(lines)


register_task(Task(
    name="hotelid",
    title="Hotel recognition with and without occlusion masks (Hotel-ID 2022, FGVC9)",
    source="SEEDS.md hotelid: VGG-16 from scratch with / without random occlusion masks",
    folder="hotelid",
    layout=LAYOUT,
    load=load_hotelid,
    metrics=("map5", "topk"),
    primary="map5",
    fetch_help=FETCH_HELP,
    quick_limit=(5, 2),
    notes=(
        "Kaggle's test images carry no labels, so the test split is held out from the training "
        "images per hotel (seeded; every test hotel keeps training images). Runs whose data "
        "line says GENERATED FIXTURE used synthetic rooms, not Hotel-ID photographs."
    ),
    extras={"page_sections": page_sections, "generate_fixture": generate_fixture,
            "fixture_note": 'synthetic rooms, NOT Hotel-ID data'},
))
