"""Figures for pages: confusion matrices, learning curves, score against runtime. Every
figure is written deterministically (fixed hash salt, no timestamp) and atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .results import RunRecord


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


def confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (rows = true class) with the counts written in; the
    axes are labelled with `classes` in the order of the matrix's rows and columns."""
    plt = figure_setup()
    cm = np.asarray(cm, dtype=float)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix {cm.shape} does not fit {len(classes)} class names")
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




FAMILY_COLOURS = {"classical": "tab:blue", "deep": "tab:orange", "pretrained": "tab:green",
                  "baseline": "tab:gray"}


def cost_figure(rows, metric: str, path: Path, title: str) -> bool:
    """`metric` (with its interval) against runtime (log scale), one point per aggregate row
    (cvbench.aggregate.Row: mean over seeds, the row's own runtime), coloured by family."""
    pts = [(r, r.mean(metric), r.interval(metric), r.runtime().seconds) for r in rows]
    pts = [p for p in pts if p[1] is not None and p[3] > 0]
    if not pts:
        return False
    plt = figure_setup()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    seen = set()
    for r, y, ci, x in sorted(pts, key=lambda p: (p[3], p[0].label)):
        fam = r.family
        err = None if ci is None else [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]]
        ax.errorbar([x], [y], yerr=err, fmt="o", color=FAMILY_COLOURS.get(fam, "black"), capsize=2,
                    ms=4, label=None if fam in seen else fam)
        seen.add(fam)
        ax.annotate(r.label[:28], (x, y), fontsize=5, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("runtime (fit + predict), seconds, log scale")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)
    return True


def robustness_figure(robust, metric: str, path: Path, title: str) -> bool:
    """One line per method (cvbench.aggregate.Robustness): its clean score at severity 0, then
    the mean over the corruptions it ran at each severity; coloured by family."""
    lines = []
    for r in robust:
        by_sev: dict[int, list[float]] = {}
        for value, c in r.corrupted.items():
            sev = int(value.partition(":")[2])
            by_sev.setdefault(sev, []).append(c.mean() or 0.0)
        xs = [0, *sorted(by_sev)]
        ys = [r.clean.mean() or 0.0, *(float(np.mean(by_sev[s])) for s in sorted(by_sev))]
        lines.append((r, xs, ys))
    if not lines:
        return False
    plt = figure_setup()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    seen = set()
    for r, xs, ys in sorted(lines, key=lambda x: (x[0].clean.family, x[0].clean.label)):
        fam = r.clean.family
        ax.plot(xs, ys, "o-", color=FAMILY_COLOURS.get(fam, "black"), ms=3, lw=1,
                label=None if fam in seen else fam)
        seen.add(fam)
        ax.annotate(r.clean.label[:24], (xs[-1], ys[-1]), fontsize=5, xytext=(3, 0), textcoords="offset points")
    ax.set_xticks(range(0, 6))
    ax.set_xlabel("corruption severity (0 = clean; mean over the corruptions run)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)
    return True
