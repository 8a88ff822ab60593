"""fairface page sections: the training compositions, accuracy per race x gender (the
study's Tables V-XI) with per-race bars, and the biased-vs-balanced race confusion. The
disparity summary, the paired differences and the seed table are shared sections
(cvbench.report), configured by task.toml's [report.comparison]."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from cvbench.aggregate import clean_records
from cvbench.compare import (
    N_BOOT,
    comparison_families,
    family_order,
    family_title,
    variant_name,
    variant_rank,
)
from cvbench.figures import figure_setup, save_png
from cvbench.format import details, fmt, fmt_budget, fmt_ci, fmt_seconds, md_table, slug
from cvbench.metrics import group_bootstrap, group_statistics
from cvbench.report import Page
from cvbench.results import RunRecord

from .reader import RACES


def _race_gender(name: str) -> tuple[str, str]:
    for sep in (" / ", "*", "/", "|", ", "):
        if sep in name:
            a, _, b = name.partition(sep)
            return a.strip(), b.strip()
    return name, ""


def section_compositions(page: Page) -> str:
    records = clean_records(page.records)
    out = ["## Bias study: training compositions at equal size\n",
           "Every composition is drawn from the training split at the same total size N "
           "(the largest N at which the study's biased mix still fits; counts rounded by largest "
           "remainder; natural = a simple random sample). Mitigations keep the biased data and "
           "change the loss (class-balanced weights) or the sampler (group-balanced batches). "
           "Test = FairFace's released validation set, clean (runs under a corruption are in the robustness section). Gender / age come from the joint "
           "model's auxiliary heads. Best val acc. is measured on the validation part carved "
           "from that run's own training mix, so it is not comparable across compositions "
           "(a White-heavy validation set rewards predicting White).\n"]
    order = sorted(records, key=lambda r: (r.method, r.label, variant_name(page, r), r.seed))
    rows = []
    for r in order:
        counts = r.composition.get("counts") or (r.data.get("train_used") or r.data["train"]).get("class_counts") or {}
        aux = r.metrics.get("aux") or {}
        val = [v for v in (r.curves.get("val_acc") or []) if v is not None]
        rows.append([
            r.label, variant_name(page, r), str(r.seed), str(r.train_n),
            "/".join(str(counts.get(c, "?")) for c in RACES),
            fmt_ci(r), fmt(max(val)) if val else "–",
            fmt((aux.get("gender") or {}).get("accuracy")), fmt((aux.get("age") or {}).get("accuracy")),
            fmt_seconds(r.timings.get("fit_s")), fmt_budget(r),
        ])
    out.append(md_table(
        ["run", "training set", "seed", "N", "per race (" + "/".join(c[:2] for c in RACES) + ")",
         "race acc. [95% CI]", "best val acc.", "gender acc.", "age acc.", "fit", "budget"], rows))
    return "\n".join(out)


def section_per_group(page: Page) -> str:
    fams = comparison_families(page)
    out = ["## Accuracy per race × gender (the study's Tables V–XI)\n"]
    for fk in family_order(fams):
        recs = sorted(fams[fk], key=lambda r: (variant_rank(page, r), r.seed))
        title = family_title(page, recs)
        out.append(f"### {title}\n")
        cols = [f"{variant_name(page, r)} (seed {r.seed})" for r in recs]
        race_rg = [(r.group_accuracy("race"), r.group_accuracy("race*gender")) for r in recs]
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
        rows.append(["**all**"] + [fmt(r.metric("accuracy"), 3) for r in recs])
        out.append(md_table(["group"] + cols, rows))
        link = _per_race_png(page, recs, title)
        if link:
            out.append(f"![per-race accuracy]({link})\n")
        out.extend(_confusion_pairs(page, recs, title))
    return "\n".join(out)


def _per_race_png(page: Page, recs: list[RunRecord], title: str) -> str | None:
    """Grouped bars: accuracy per race for each training set of one family (first seed)."""
    seed0 = min(r.seed for r in recs)
    recs = [r for r in recs if r.seed == seed0 and r.group_accuracy("race")]
    if len(recs) < 2:
        return None
    plt = figure_setup()
    fig, ax = plt.subplots(figsize=(8, 3))
    width = 0.8 / len(recs)
    x = np.arange(len(RACES))
    for i, r in enumerate(recs):
        acc = r.group_accuracy("race")
        ax.bar(x + i * width - 0.4 + width / 2, [acc.get(c, 0.0) for c in RACES], width,
               label=variant_name(page, r))
    ax.set_xticks(x, RACES, rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"per-race accuracy: {title}", fontsize=7)
    path, link = page.figure_path(_figure_name("per-race", title))
    save_png(fig, path)
    plt.close(fig)
    return link


def _figure_name(prefix: str, title: str) -> str:
    """A figure file named after its family's title: readable (the title's slug, cut short)
    and unique (a digest of the whole title, so two families whose slugs share their first
    characters, such as one under a corruption, never collide)."""
    digest = hashlib.sha1(title.encode()).hexdigest()[:8]
    return f"{prefix}-{slug(title.replace('`', ''))[:80].strip('-')}-{digest}.png"


def _confusion_pairs(page: Page, recs: list[RunRecord], title: str) -> list[str]:
    """Row-normalised race confusion of the biased and balanced runs (same seed) and their
    difference."""
    cfg = page.task.comparison
    by_seed: dict[int, dict[str, RunRecord]] = defaultdict(dict)
    for r in recs:
        by_seed[r.seed][variant_name(page, r)] = r
    out = []
    for seed, named in sorted(by_seed.items()):
        con, ref = named.get(cfg.get("contrast")), named.get(cfg.get("reference"))
        if con is None or ref is None:
            continue
        mats = []
        for r in (con, ref):
            cm = np.asarray(r.metrics.get("confusion") or [], dtype=float)
            if cm.shape != (len(RACES), len(RACES)):
                break
            rows = cm.sum(1, keepdims=True)
            mats.append(np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0))
        if len(mats) != 2:
            continue
        plt = figure_setup()
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        panels = ((cfg["contrast"], mats[0], "Blues", 0, 1), (cfg["reference"], mats[1], "Blues", 0, 1),
                  (f"{cfg['contrast']} − {cfg['reference']}", mats[0] - mats[1], "RdBu_r", -0.5, 0.5))
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
        path, link = page.figure_path(
            _figure_name(f"confusion-{cfg['contrast']}-vs-{cfg['reference']}-seed{seed}", title))
        save_png(fig, path)
        plt.close(fig)
        out.append(f"![{cfg['contrast']} vs {cfg['reference']} confusion, seed {seed}]({link})\n")
    return out


# The study's own numbers (docs/studies.md): claims, not our measurements. Its balanced set was a
# rebalanced mix (White 19.03%, the others 11-15%), trained for 40 epochs against 10.
STUDY = (("biased (White 43.93%), 10 epochs", 0.7501, 0.674, 0.98 - 0.674),
         ("rebalanced (White 19.03%), 40 epochs", 0.9399, 0.873, 0.984 - 0.873))


def _paired_by_seed(recs_by_variant: dict[str, dict[int, RunRecord]], ref: str):
    """Seeds every variant has, and per variant the seed-mean of each statistic with its
    paired bootstrap samples (same resamples of the test items for every run)."""
    seeds = sorted(set.intersection(*(set(d) for d in recs_by_variant.values())))
    if not seeds:
        return None
    names = list(recs_by_variant)
    runs = [recs_by_variant[v][s] for v in names for s in seeds]
    y = np.asarray(runs[0].y_true())
    if any(np.asarray(r.y_true()).shape != y.shape or (np.asarray(r.y_true()) != y).any() for r in runs):
        return None
    correct = np.stack([np.asarray(r.y_pred()) == y for r in runs])
    strata = np.asarray(RACES, dtype=object)[y].astype(str)
    boot, point = group_bootstrap(correct, strata, n_boot=N_BOOT, seed=0), group_statistics(correct, strata)
    shape = (len(names), len(seeds))
    out = {}
    for key in ("balanced", "gap", "min", "overall"):
        out[key] = (point[key].reshape(shape).mean(1), boot[key].reshape(shape + (-1,)).mean(1))
    return names, seeds, out, len(y), np.bincount(y, minlength=len(RACES))


def _ci(samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return f"[{lo:.3f}, {hi:.3f}]"


def _diff(d: float, samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    text = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def section_bias(page: Page) -> str:
    """The finding first: race-balanced accuracy and the gap between races, per training mix,
    averaged over paired seeds with paired bootstrap intervals, beside the study's claims."""
    cfg = page.task.comparison
    ref = cfg.get("reference", "balanced")
    out = []
    fams = comparison_families(page)
    for recs in (fams[fk] for fk in family_order(fams)):
        by_variant: dict[str, dict[int, RunRecord]] = defaultdict(dict)
        for r in sorted(recs, key=lambda r: variant_rank(page, r)):
            by_variant[variant_name(page, r)][r.seed] = r
        if ref not in by_variant or len(by_variant) < 2:
            continue
        res = _paired_by_seed(by_variant, ref)
        if res is None:
            continue
        names, seeds, stats, n, counts = res
        i_ref = names.index(ref)
        rows = []
        for i, name in enumerate(names):
            bal, gap, worst, overall = (stats[k][0][i] for k in ("balanced", "gap", "min", "overall"))
            bs = {k: stats[k][1][i] for k in stats}
            rs = {k: stats[k][1][i_ref] for k in stats}
            rows.append([
                f"**{name}**" if name == ref else name,
                f"{bal:.3f} {_ci(bs['balanced'])}", f"{gap:.3f} {_ci(bs['gap'])}", f"{worst:.3f}",
                "–" if i == i_ref else _diff(bal - stats["balanced"][0][i_ref], bs["balanced"] - rs["balanced"]),
                "–" if i == i_ref else _diff(gap - stats["gap"][0][i_ref], bs["gap"] - rs["gap"]),
                f"{overall:.3f}",
            ])
        mix = "equal shares (" + ", ".join(str(c) for c in sorted(set(counts.tolist()))) + " per race)" \
            if len(set(counts.tolist())) == 1 else "/".join(str(c) for c in counts)
        out.append(f"### {family_title(page, recs)}: seeds {', '.join(map(str, seeds))} (paired)\n")
        out.append(md_table(
            ["training set", "race-balanced accuracy [95% CI]", "race gap max − min [95% CI]",
             "worst race", f"Δ race-balanced acc. vs {ref} [95% CI]", f"Δ gap vs {ref} [95% CI]",
             f"overall accuracy (test mix: {mix})"], rows))
    if not out:
        return ""
    head = ["## Does the training mix change who is recognised?\n",
            "Race-balanced accuracy is the mean of the seven per-race accuracies; the gap is the best "
            "race's accuracy minus the worst's. Each value is the mean over the seeds that every "
            "training set of the model ran with (paired seed with seed); intervals are paired "
            f"bootstrap intervals ({N_BOOT} resamples of the test faces, stratified by race, the same "
            "resamples for every run), so they cover test-set sampling; the seed table below shows "
            "training variance. Bold: the interval of the difference excludes 0. Overall accuracy "
            "depends on the test set's race mix, given in its column; on an equal-shares test set it "
            "equals race-balanced accuracy.\n"]
    study = md_table(["the study's training set (reported, not measured here)", "overall accuracy",
                      "worst race × gender", "gap max − min"],
                     [[name, f"{acc:.4f}", f"{lo:.3f}", f"{gap:.3f}"] for name, acc, lo, gap in STUDY])
    tail = ("The study's claims ([docs/studies.md](../docs/studies.md#fairface)) for comparison: its jump from 75.01% to 93.99% is not "
            "plausible for FairFace race classification and was not controlled for epochs or size; "
            "here every training set has the same size and epochs.\n\n" + study)
    return "\n".join(head + out) + "\n" + tail


def section_per_group_details(page: Page) -> str:
    return details("Accuracy per race × gender (the study's Tables V–XI), run by run", section_per_group(page))


SECTIONS = {"compositions": section_compositions, "per_group": section_per_group,
            "per_group_details": section_per_group_details, "bias": section_bias}
