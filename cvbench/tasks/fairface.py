"""FairFace: race classification (7 groups) and the dataset-bias study.

The study trained a ResNet-34 (joint race / gender / age head) on a White-heavy "biased" mix
and on a rebalanced one and compared per race x gender accuracy. Here every method can train
on the same compositions at equal size (see cvbench.data.fairface.compose), and this module
renders the per-group tables, the disparity summary and paired-bootstrap differences.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..data.fairface import LAYOUT, RACES, generate_fixture, read_fairface
from . import Task, register_task

VARIANT_PARAMS = ("composition", "class_weight", "sampling")  # what a comparison varies
RUNTIME = ("seed", "device", "n_jobs", "resume", "budget_clock")  # never tell runs apart
N_BOOT = 2000


# ---------------------------------------------------------------- record helpers
def variant_name(rec: dict) -> str:
    """'biased', 'biased + class-balanced loss', 'all 7000 (no composition)', ..."""
    p = rec.get("params", {})
    comp = p.get("composition")
    base = str(comp) if comp is not None else f"all {train_size(rec)} (no composition)"
    extra = []
    cw = p.get("class_weight")
    if cw:
        extra.append("class-balanced loss" if cw == "balanced" else f"class_weight={cw}")
    s = p.get("sampling")
    if s:
        key = str(s).partition(":")[2]
        extra.append(f"balanced sampling by {key or 'race'}" if str(s).startswith("balanced") else f"sampling={s}")
    return " + ".join([base] + extra)


def train_size(rec: dict) -> int:
    comp = (rec.get("info") or {}).get("composition") or {}
    return int(comp.get("total") or rec["data"]["train"]["n"])


def family_key(rec: dict) -> tuple:
    """Runs that differ only in composition / mitigation / seed form one comparison family."""
    fixed = tuple(sorted((k, repr(v)) for k, v in rec["params"].items()
                         if k not in VARIANT_PARAMS and k not in RUNTIME))
    return (rec["method"], rec["data"]["test"]["fingerprint"], fixed)


def _families(records: list[dict]) -> dict[tuple, list[dict]]:
    fams: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        fams[family_key(r)].append(r)
    return fams


TITLE_PARAMS = ("model", "width", "image_size", "epochs", "size", "k", "metric", "vocab_size",
                "max_side", "step")


def _family_title(recs: list[dict], all_records: list[dict]) -> str:
    """Method plus its defining parameters (and any other that differs between families)."""
    r = recs[0]
    same_method = [x for x in all_records if x["method"] == r["method"]]
    varying = {k for x in same_method for k, v in x["params"].items()
               if k not in VARIANT_PARAMS and k not in RUNTIME and repr(v) != repr(r["params"].get(k))}
    names = [k for k in TITLE_PARAMS if k in r["params"]] + sorted(varying - set(TITLE_PARAMS))
    shown = ", ".join(f"{k}={r['params'].get(k)}" for k in names)
    return f"`{r['method']}`" + (f" ({shown})" if shown else "")


def _race_gender(name: str) -> tuple[str, str]:
    for sep in (" / ", "*", "/", "|", ", "):
        if sep in name:
            a, _, b = name.partition(sep)
            return a.strip(), b.strip()
    return name, ""


def _group_acc(rec: dict, spec: str) -> dict[str, float]:
    pg = ((rec["metrics"].get("groups") or {}).get(spec) or {}).get("per_group") or {}
    return {g: float(v["accuracy"]) for g, v in pg.items()}


def _summary(rec: dict, spec: str) -> dict[str, float]:
    from ..metrics import disparity_summary

    g = (rec["metrics"].get("groups") or {}).get(spec) or {}
    return g.get("summary") or (disparity_summary(g["per_group"]) if g.get("per_group") else {})


# ---------------------------------------------------------------- bootstrap
def group_bootstrap(
    correct: np.ndarray, strata: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, np.ndarray]:
    """Stratified paired bootstrap of per-group accuracy for R runs on the same test items.

    correct: (R, n) bool, one row per run; strata: (n,) group label per item. Items are
    resampled within each group (the test design fixes the group sizes), with the same draws
    for every run, so differences between runs are paired. Returns arrays of shape (R, B)
    for "overall", "gap" (max - min over groups), "std", "min", and (R, G, B) "per_group";
    "groups" lists the group names in order.
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    strata = np.asarray(strata).astype(str)
    names, inverse = np.unique(strata, return_inverse=True)
    rng = np.random.default_rng(seed)
    n_runs, n = correct.shape
    per_group = np.empty((n_runs, len(names), n_boot))
    weights = np.bincount(inverse, minlength=len(names)) / max(n, 1)
    for g in range(len(names)):
        idx = np.flatnonzero(inverse == g)
        draw = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        per_group[:, g, :] = correct[:, draw].mean(axis=2)
    return {
        "groups": names,
        "per_group": per_group,
        "overall": np.einsum("g,rgb->rb", weights, per_group),
        "gap": per_group.max(axis=1) - per_group.min(axis=1),
        "std": per_group.std(axis=1),
        "min": per_group.min(axis=1),
    }


def _point(correct: np.ndarray, strata: np.ndarray) -> dict[str, Any]:
    """The statistics of group_bootstrap on the observed data, for R runs."""
    correct = np.atleast_2d(correct)
    names, inverse = np.unique(np.asarray(strata).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    per_group = np.stack([np.bincount(inverse, weights=c, minlength=len(names)) / counts for c in correct])
    return {"groups": names, "per_group": per_group, "overall": correct.mean(axis=1),
            "gap": per_group.max(1) - per_group.min(1), "std": per_group.std(1), "min": per_group.min(1)}


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return float(lo), float(hi)


def _fmt_diff(d: float, samples: np.ndarray) -> str:
    lo, hi = _ci(samples)
    text = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


# ---------------------------------------------------------------- page sections
def page_sections(records: list[dict], figures_dir: Path) -> str:
    """Markdown for leaderboard/fairface.md: compositions, per-group tables, disparity,
    biased-vs-balanced differences with paired-bootstrap CIs, gender/age of joint models."""
    from ..leaderboard import fmt, fmt_budget, fmt_ci, fmt_seconds, md_table

    if not records:
        return ""
    out = ["## Bias study: training compositions at equal size\n",
           "Every composition is drawn from the training split at the same total size N "
           "(the largest N at which the study's biased mix still fits; counts rounded by largest "
           "remainder; natural = a simple random sample). Mitigations keep the biased data and "
           "change the loss (class-balanced weights) or the sampler (group-balanced batches). "
           "Test = FairFace's released validation set. Gender / age come from the joint "
           "model's auxiliary heads. Best val acc. is measured on the validation part carved "
           "from that run's own training mix, so it is not comparable across compositions "
           "(a White-heavy validation set rewards predicting White).\n"]
    order = sorted(records, key=lambda r: (r["method"], r["label"], variant_name(r), r["seed"]))
    rows = []
    for r in order:
        m = r["metrics"]
        comp = (r.get("info") or {}).get("composition") or {}
        counts = comp.get("counts") or r["data"]["train"].get("class_counts") or {}
        aux = m.get("aux") or {}
        curves = (r.get("info") or {}).get("curves") or {}
        val = [v for v in (curves.get("val_acc") or []) if v is not None]
        rows.append([
            r["label"], variant_name(r), str(r["seed"]), str(train_size(r)),
            "/".join(str(counts.get(c, "?")) for c in RACES),
            fmt_ci(m), fmt(max(val)) if val else "–",
            fmt((aux.get("gender") or {}).get("accuracy")), fmt((aux.get("age") or {}).get("accuracy")),
            fmt_seconds(r["timings"].get("fit_s")), fmt_budget(r),
        ])
    out.append(md_table(
        ["run", "training set", "seed", "N", "per race (" + "/".join(c[:2] for c in RACES) + ")",
         "race acc. [95% CI]", "best val acc.", "gender acc.", "age acc.", "fit", "budget"], rows))

    out.append("## Disparity across groups (the study's Table XII)\n")
    out.append("Max, min, mean, population std and max − min gap of test accuracy across the 7 races "
               "and across the 14 race × gender groups.\n")
    rows = []
    for r in order:
        row = [r["label"], variant_name(r), str(r["seed"])]
        for spec in ("race", "race*gender"):
            s = _summary(r, spec)
            row += [fmt(s.get(k), 3) for k in ("max", "min", "mean", "std", "gap")]
        rows.append(row)
    head = ["run", "training set", "seed"] + [f"{s} {k}" for s in ("race", "race×gender")
                                              for k in ("max", "min", "mean", "std", "gap")]
    out.append(md_table(head, rows))

    fams = _families(records)
    fam_order = sorted(fams, key=lambda k: (k[0], str(k[2])))
    out.append("## Accuracy per race × gender (the study's Tables V–XI)\n")
    for fk in fam_order:
        recs = sorted(fams[fk], key=lambda r: (_variant_rank(r), r["seed"]))
        out.append(f"### {_family_title(recs, records)}\n")
        cols = [f"{variant_name(r)} (seed {r['seed']})" for r in recs]
        race_rg = [(_group_acc(r, "race"), _group_acc(r, "race*gender")) for r in recs]
        rows = []
        for race in RACES:
            rows.append([f"**{race}**"] + [fmt(ra.get(race), 3) for ra, _ in race_rg])
            genders = sorted({_race_gender(g)[1] for _, rg in race_rg for g in rg
                              if _race_gender(g)[0] == race}, reverse=True)
            for gender in genders:
                cells = []
                for _, rg in race_rg:
                    hit = [v for g, v in rg.items() if _race_gender(g) == (race, gender)]
                    cells.append(fmt(hit[0], 3) if hit else "–")
                rows.append([f"{race} / {gender}"] + cells)
        rows.append(["**all**"] + [fmt(r["metrics"].get("accuracy"), 3) for r in recs])
        out.append(md_table(["group"] + cols, rows))
        fig = _per_race_png(recs, figures_dir, _family_title(recs, records))
        if fig:
            out.append(f"![per-race accuracy](figures/{figures_dir.name}/{fig})\n")

    diffs = _difference_sections(fams, fam_order, records, figures_dir)
    if diffs:
        out.append("## Biased vs balanced, and does mitigation recover? (paired bootstrap)\n")
        out.append(f"Differences in test accuracy between runs of the same model and seed, with "
                   f"95% percentile intervals from {N_BOOT} paired bootstrap resamples of the test "
                   "items, stratified by race (by race × gender for the race × gender rows). "
                   "Bold: the interval excludes 0. The interval covers test-set sampling only; "
                   "seed-to-seed training variance is shown separately where several seeds ran. "
                   "Intervals of extremes (worst group, gap) are rough: the bootstrap of a max "
                   "or min is biased.\n")
        out.extend(diffs)
    seeds = _seed_table(fams, fam_order, records)
    if seeds:
        out.append("## Across training seeds\n")
        out.append(seeds)
    return "\n".join(out)


def _variant_rank(rec: dict) -> tuple:
    p = rec["params"]
    comp = p.get("composition")
    order = {"balanced": 0, "biased": 1, "natural": 2}
    return (order.get(comp, 3) if comp is not None else 4, bool(p.get("class_weight")),
            str(p.get("sampling") or ""), str(comp))


def _difference_sections(fams, fam_order, records, figures_dir) -> list[str]:
    from ..leaderboard import fmt, md_table

    out = []
    for fk in fam_order:
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in fams[fk]:
            by_seed[r["seed"]].append(r)
        for seed, recs in sorted(by_seed.items()):
            recs = sorted(recs, key=_variant_rank)
            names = [variant_name(r) for r in recs]
            if "balanced" not in names or "biased" not in names or len(set(names)) != len(names):
                continue
            y_true = np.asarray(recs[0]["predictions"]["y_true"])
            if any(np.asarray(r["predictions"]["y_true"]).shape != y_true.shape
                   or (np.asarray(r["predictions"]["y_true"]) != y_true).any() for r in recs):
                continue
            correct = np.stack([np.asarray(r["predictions"]["y_pred"]) == y_true for r in recs])
            race = np.asarray(RACES, dtype=object)[y_true].astype(str)
            boot = group_bootstrap(correct, race, seed=0)
            point = _point(correct, race)
            rg_boot = rg_point = None
            genders = _test_groups(recs, "gender")
            if genders is not None and len(genders) == len(y_true):
                cells = np.char.add(np.char.add(race, " / "), np.asarray(genders).astype(str))
                rg_boot, rg_point = group_bootstrap(correct, cells, seed=0), _point(correct, cells)
            i_bal, i_bia = names.index("balanced"), names.index("biased")
            others = [i for i in range(len(recs)) if i not in (i_bal, i_bia)]
            quantities = [("race accuracy (overall)", point, boot, "overall", None)]
            where = {g: j for j, g in enumerate(point["groups"])}
            quantities += [(f"accuracy: {g}", point, boot, "per_group", where[g]) for g in RACES if g in where]
            quantities += [("worst race", point, boot, "min", None), ("race gap (max − min)", point, boot, "gap", None),
                           ("race std", point, boot, "std", None)]
            if rg_boot is not None:
                quantities += [("worst race × gender", rg_point, rg_boot, "min", None),
                               ("race × gender gap", rg_point, rg_boot, "gap", None)]
            values = []
            for name, pt, bt, key, j in quantities:
                val = pt[key] if j is None else pt[key][:, j]
                smp = bt[key] if j is None else bt[key][:, j, :]
                values.append((name, val, smp))
            title = _family_title(recs, records)
            out.append(f"### {title}, seed {seed}\n")
            if rg_boot is None:
                out.append("_Race × gender differences need per-item genders in the records "
                           "(`predictions.groups.gender`); not stored for these runs._\n")
            rows = [[name, fmt(float(val[i_bal]), 3), fmt(float(val[i_bia]), 3),
                     _fmt_diff(float(val[i_bia] - val[i_bal]), smp[i_bia] - smp[i_bal])]
                    for name, val, smp in values]
            out.append(md_table(["quantity", "balanced", "biased", "biased − balanced [95% CI]"], rows))
            for i in others:
                rows = [[name, fmt(float(val[i]), 3),
                         _fmt_diff(float(val[i] - val[i_bia]), smp[i] - smp[i_bia]),
                         _fmt_diff(float(val[i] - val[i_bal]), smp[i] - smp[i_bal])]
                        for name, val, smp in values]
                out.append(f"**{names[i]}** against biased (does it recover?) and against balanced "
                           "(what is left):\n")
                out.append(md_table(["quantity", names[i], "− biased [95% CI]", "− balanced [95% CI]"], rows))
            fig = _confusion_pair_png(recs[i_bia], recs[i_bal], figures_dir, title, seed)
            if fig:
                out.append(f"![biased vs balanced confusion](figures/{figures_dir.name}/{fig})\n")
    return out


def _test_groups(recs: list[dict], key: str) -> np.ndarray | None:
    for r in recs:
        g = ((r.get("predictions") or {}).get("groups") or {}).get(key)
        if g is not None:
            return np.asarray(g)
    return None


def _seed_table(fams, fam_order, records) -> str:
    """Mean ± sd over training seeds (sd only with 2+ seeds), and the difference to the
    balanced run of the same seed: the training-variance side of the uncertainty."""
    from ..leaderboard import md_table

    def ms(x: np.ndarray) -> str:
        x = x[np.isfinite(x)]
        if not len(x):
            return "–"
        return f"{x.mean():+.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x[0]:+.3f} (1 seed)"

    rows = []
    for fk in fam_order:
        by_variant: dict[str, list[dict]] = defaultdict(list)
        for r in fams[fk]:
            by_variant[variant_name(r)].append(r)
        if max(len(v) for v in by_variant.values()) < 2:
            continue
        title = _family_title(fams[fk], records)
        balanced = {r["seed"]: r for r in by_variant.get("balanced", [])}
        for name, recs in sorted(by_variant.items(), key=lambda kv: _variant_rank(kv[1][0])):
            acc = np.array([r["metrics"]["accuracy"] for r in recs])
            gap = np.array([_summary(r, "race").get("gap", np.nan) for r in recs])
            d_acc = np.array([r["metrics"]["accuracy"] - balanced[r["seed"]]["metrics"]["accuracy"]
                              for r in recs if r["seed"] in balanced])
            d_gap = np.array([_summary(r, "race").get("gap", np.nan) - _summary(balanced[r["seed"]], "race").get("gap", np.nan)
                              for r in recs if r["seed"] in balanced])
            rows.append([title, name, ", ".join(str(r["seed"]) for r in sorted(recs, key=lambda r: r["seed"])),
                         ms(acc).lstrip("+"), ms(gap).lstrip("+"),
                         ms(d_acc) if name != "balanced" else "–", ms(d_gap) if name != "balanced" else "–"])
    if not rows:
        return ""
    return md_table(["model", "training set", "seeds", "race acc. mean ± sd", "race gap mean ± sd",
                     "acc. − balanced (same seed)", "gap − balanced (same seed)"], rows)


# ---------------------------------------------------------------- figures
def _slug(text: str) -> str:
    from ..leaderboard import slug

    return slug(text.replace("`", ""))[:90].strip("-")


def _per_race_png(recs: list[dict], figures_dir: Path, title: str) -> str | None:
    """Grouped bars: accuracy per race for each training set of one family (first seed)."""
    from ..leaderboard import _figure_setup, _save

    seed0 = min(r["seed"] for r in recs)
    recs = [r for r in recs if r["seed"] == seed0 and _group_acc(r, "race")]
    if len(recs) < 2:
        return None
    plt = _figure_setup()
    fig, ax = plt.subplots(figsize=(8, 3))
    width = 0.8 / len(recs)
    x = np.arange(len(RACES))
    for i, r in enumerate(recs):
        acc = _group_acc(r, "race")
        ax.bar(x + i * width - 0.4 + width / 2, [acc.get(c, 0.0) for c in RACES], width,
               label=variant_name(r))
    ax.set_xticks(x, RACES, rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"per-race accuracy: {title}", fontsize=7)
    name = f"per-race-{_slug(title)}.png"
    _save(fig, figures_dir / name)
    plt.close(fig)
    return name


def _confusion_pair_png(biased: dict, balanced: dict, figures_dir: Path, title: str,
                        seed: int) -> str | None:
    """Row-normalised race confusion of the biased and balanced runs and their difference."""
    from ..leaderboard import _figure_setup, _save

    mats = []
    for r in (biased, balanced):
        cm = np.asarray(r["metrics"].get("confusion") or [], dtype=float)
        if cm.shape != (len(RACES), len(RACES)):
            return None
        rows = cm.sum(1, keepdims=True)
        mats.append(np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0))
    plt = _figure_setup()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("biased", mats[0], "Blues", 0, 1), ("balanced", mats[1], "Blues", 0, 1),
              ("biased − balanced", mats[0] - mats[1], "RdBu_r", -0.5, 0.5))
    short = [c.replace("_", " ").replace("Southeast", "SE") for c in RACES]
    for k, (ax, (name, m, cmap, lo, hi)) in enumerate(zip(axes, panels)):
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_xticks(range(len(RACES)), short, rotation=60, ha="right")
        ax.set_yticks(range(len(RACES)), short if k == 0 else [""] * len(RACES))
        ax.set_title(name)
        ax.set_xlabel("predicted")
        for i in range(len(RACES)):
            for j in range(len(RACES)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0].set_ylabel("true")
    fig.suptitle(f"race confusion (row-normalised): {title}, seed {seed}", fontsize=8)
    name = f"confusion-biased-vs-balanced-seed{seed}-{_slug(title)}.png"
    _save(fig, figures_dir / name)
    plt.close(fig)
    return name


register_task(Task(
    name="fairface",
    title="FairFace race classification (7 groups): biased vs balanced training, per-group disparity",
    source=("dataset-bias study on FairFace (Kärkkäinen & Joo 2019): ResNet-34 with a joint "
            "race/gender/age head trained on a White-heavy mix vs a rebalanced one"),
    folder="fairface",
    layout=LAYOUT,
    load=read_fairface,
    metrics=("groups:race", "groups:race*gender", "topk"),
    primary="accuracy",
    val_group_key=None,
    fetch_help=(
        "FairFace (https://github.com/joojs/fairface): download the padding=0.25 image archive "
        "and fairface_label_train.csv / fairface_label_val.csv linked from its README (Google "
        "Drive), unzip so that train/ and val/ sit beside the two CSVs under "
        "$CVBENCH_DATA/fairface."
    ),
    quick_limit=(20, 10),
    notes=(
        "Test split = FairFace's released validation set: FairFace publishes no test labels. "
        "Race is the label (class order as in the study); gender and age are per-item groups "
        "(and auxiliary targets of the joint model). The `fairface-*` methods train any base "
        "method on a composition of the training split (natural / biased / balanced / "
        "'Race=pct,...') drawn at one common size, so a biased-vs-balanced difference is never "
        "a training-set-size difference; see cvbench/data/fairface.py."
    ),
    extras={"page_sections": page_sections, "generate_fixture": generate_fixture,
            "fixture_note": 'synthetic colour patches, not faces'},
))
