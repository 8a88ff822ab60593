"""fairface page sections: the training compositions, accuracy per race x gender (the
study's Tables V-XI) with per-race bars, and the biased-vs-balanced race confusion. The
disparity summary, the paired differences and the seed table are shared sections
(cvbench.report), configured by task.toml's [report.comparison]."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cvbench.report import (
    Page,
    comparison_families,
    family_title,
    figure_setup,
    fmt,
    fmt_budget,
    fmt_ci,
    fmt_seconds,
    md_table,
    save_png,
    slug,
    variant_name,
    variant_rank,
)
from cvbench.results import RunRecord

from .reader import RACES


def _race_gender(name: str) -> tuple[str, str]:
    for sep in (" / ", "*", "/", "|", ", "):
        if sep in name:
            a, _, b = name.partition(sep)
            return a.strip(), b.strip()
    return name, ""


def section_compositions(page: Page) -> str:
    records = page.records
    out = ["## Bias study: training compositions at equal size\n",
           "Every composition is drawn from the training split at the same total size N "
           "(the largest N at which the study's biased mix still fits; counts rounded by largest "
           "remainder; natural = a simple random sample). Mitigations keep the biased data and "
           "change the loss (class-balanced weights) or the sampler (group-balanced batches). "
           "Test = FairFace's released validation set. Gender / age come from the joint "
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
    for fk in sorted(fams, key=lambda k: (k[0], k[2], str(k[3]))):
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
    path, link = page.figure_path(f"per-race-{slug(title.replace('`', ''))[:90].strip('-')}.png")
    save_png(fig, path)
    plt.close(fig)
    return link


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
        name = f"confusion-{cfg['contrast']}-vs-{cfg['reference']}-seed{seed}-{slug(title.replace('`', ''))[:90].strip('-')}.png"
        path, link = page.figure_path(name)
        save_png(fig, path)
        plt.close(fig)
        out.append(f"![{cfg['contrast']} vs {cfg['reference']} confusion, seed {seed}]({link})\n")
    return out


SECTIONS = {"compositions": section_compositions, "per_group": section_per_group}
