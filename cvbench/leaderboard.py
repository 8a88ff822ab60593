"""Render leaderboard/index.md and leaderboard/<task>.md (+ figures) from stored records only.

Rendering is deterministic: the same records give byte-identical pages and figures, so a
re-render after no new runs changes nothing in git.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .paths import leaderboard_dir
from .results import load_records
from .tasks import Task, list_tasks

FAMILIES = ("classical", "deep", "baseline")


# ---------------------------------------------------------------- formatting helpers
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


def fit_seconds(rec: dict) -> float:
    """Training time of a run: a deep run resumed from its checkpoint reports the time spent
    training across sessions (train_s), not the seconds of the call that restored it."""
    t = rec["timings"]
    return max(float(t.get("fit_s") or 0.0), float(t.get("train_s") or 0.0))


def run_seconds(rec: dict) -> float:
    return fit_seconds(rec) + float(rec["timings"].get("predict_s") or 0.0)


def timed_record(rec: dict, records: list[dict]) -> dict:
    """The run whose timings stand for `rec`: the slowest run with its label, quick flag and
    parameters except the method's `feature_cache_params` (e.g. k of a k-NN on cached
    histograms). That run computed the features the others re-used, so the best point's
    own time (milliseconds) would hide what the method costs."""
    try:
        from .methods import get_method_spec

        free = set(getattr(get_method_spec(rec["method"]).cls, "feature_cache_params", ()))
    except Exception:  # a method no longer registered
        free = set()
    if not free:
        return rec

    def fixed(r):
        return {k: v for k, v in r["params"].items() if k not in free}

    same = [r for r in records if r["label"] == rec["label"] and r["method"] == rec["method"]
            and bool(r.get("quick")) == bool(rec.get("quick")) and fixed(r) == fixed(rec)]
    return max(same or [rec], key=run_seconds)


def fmt_ci(m: dict) -> str:
    ci = m.get("accuracy_ci")
    acc = fmt(m.get("accuracy"))
    return f"{acc} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else acc


def primary_value(rec: dict, task: Task) -> float:
    v = rec["metrics"].get(task.primary, rec["metrics"].get("accuracy"))
    return float(v) if v is not None else float("-inf")


def fmt_budget(rec: dict) -> str:
    b = rec.get("budget") or {}
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
    if rec.get("quick"):
        parts.append("quick")
    return ", ".join(parts) or ("quick" if rec.get("quick") else "full")


def varying_params(records: list[dict]) -> list[str]:
    """Parameter names whose value differs between the given records (for compact tables)."""
    keys: dict[str, set] = defaultdict(set)
    for r in records:
        for k, v in r["params"].items():
            if k in ("device", "n_jobs", "seed"):
                continue
            keys[k].add(repr(v))
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


def param_str(rec: dict, names: list[str]) -> str:
    return ", ".join(f"{k}={rec['params'].get(k)}" for k in names if k in rec["params"])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "run"


def sort_records(records: list[dict], task: Task) -> list[dict]:
    return sorted(records, key=lambda r: (-primary_value(r, task), r["label"], r["key"]))


def best_by(records: list[dict], task: Task, field: str) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in sort_records(records, task):
        best.setdefault(r.get(field) or r["method"], r)
    return best


# ---------------------------------------------------------------- figures
def _figure_setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "cvbench", "font.size": 8})
    return plt


def _save(fig, path: Path) -> None:
    import io

    from .atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def confusion_png(rec: dict, classes: list[str], path: Path, title: str) -> None:
    import numpy as np

    plt = _figure_setup()
    cm = np.asarray(rec["metrics"]["confusion"], dtype=float)
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
    _save(fig, path)
    plt.close(fig)


def curves_png(rec: dict, path: Path, title: str) -> bool:
    curves = (rec.get("info") or {}).get("curves") or {}
    epochs = curves.get("epoch")
    if not epochs:
        return False
    plt = _figure_setup()
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
    _save(fig, path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- sweep tables
def sweep_tables(records: list[dict], task: Task) -> str:
    """For every suite block that swept parameters: accuracy over the swept values."""
    blocks: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("sweep"):
            blocks[(r["label"], tuple(r["sweep"]), r["seed"])].append(r)
    out = []
    metric = task.primary
    for (label, swept, seed), recs in sorted(blocks.items()):
        if len(recs) < 2:
            continue
        seed_note = f", seed {seed}" if seed else ""
        out.append(f"#### {label}: {metric} over {' × '.join(swept)}{seed_note}\n")
        if len(swept) == 1:
            (k,) = swept
            recs = sorted(recs, key=lambda r: _sort_key(r["params"].get(k)))
            out.append(md_table([k] + [str(r["params"].get(k)) for r in recs],
                                [[metric] + [fmt(r["metrics"].get(metric)) for r in recs]]))
        else:
            row_key, col_key, *rest = swept
            groups: dict[tuple, list[dict]] = defaultdict(list)
            for r in recs:
                groups[tuple(r["params"].get(k) for k in rest)].append(r)
            for fixed, grecs in sorted(groups.items(), key=lambda kv: [_sort_key(x) for x in kv[0]]):
                if rest:
                    out.append("_" + ", ".join(f"{k}={v}" for k, v in zip(rest, fixed)) + "_\n\n")
                cols = sorted({r["params"].get(col_key) for r in grecs}, key=_sort_key)
                rows = sorted({r["params"].get(row_key) for r in grecs}, key=_sort_key)
                cell = {(r["params"].get(row_key), r["params"].get(col_key)): r for r in grecs}
                table = [[f"{row_key}={rv}"] + [fmt(cell[(rv, cv)]["metrics"].get(metric)) if (rv, cv) in cell else "–"
                                                 for cv in cols] for rv in rows]
                out.append(md_table([f"{row_key} \\ {col_key}"] + [str(c) for c in cols], table))
        out.append("")
    return "\n".join(out)


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


# ---------------------------------------------------------------- pages
def render_task(task: Task, records: list[dict], root: Path) -> str:
    fig_dir = root / "figures" / task.name
    full = [r for r in records if not r.get("quick")]
    quick = [r for r in records if r.get("quick")]
    lines = [f"# {task.name} — {task.title}\n", f"Source study: {task.source}.\n"]
    if task.notes:
        lines.append(task.notes.strip() + "\n")
    if not records:
        lines.append(f"**No runs yet.** Make one with `cvbench suite {task.name}` "
                     f"(data expected at `$CVBENCH_DATA/{task.folder}`: {task.layout}).\n")
        return "\n".join(lines)

    variants = sorted({r["data"]["variant"] for r in full}) or sorted({r["data"]["variant"] for r in quick})
    lines.append("Data: " + "; ".join(f"{v}" for v in variants) + ".\n")
    lines.append(f"Primary metric: **{task.primary}**. Accuracy is shown with its bootstrap 95% "
                 "confidence interval. Reproduce with `cvbench suite " + task.name + "`.\n")

    if full:
        lines.append("## Best run of each method\n")
        best = best_by(full, task, "label")
        rows = []
        for label, r in sorted(best.items(), key=lambda kv: -primary_value(kv[1], task)):
            rows.append(_summary_row(r, task, label, timed_record(r, full)))
        lines.append(md_table(_summary_header(task), rows))
        if any(r.get("sweep") for r in best.values()):
            lines.append(SWEEP_NOTE)
        lines.append(TIMED_NOTE)

        stage_rows = []
        for label, r in sorted(best.items()):
            t = timed_record(r, full)["timings"]
            stages = {k: v for k, v in t.items() if k.endswith("_s") and k not in ("fit_s", "predict_s", "total_s")}
            if stages:
                stage_rows.append([label, ", ".join(f"{k.removesuffix('_s')} {fmt_seconds(v)}" for k, v in sorted(stages.items()))])
        if stage_rows:
            lines.append("### Runtime per stage (the run of each method that computed its features)\n")
            lines.append(md_table(["method", "stages"], stage_rows))

        lines.append("## Confusion matrices (best run of each method)\n")
        classes = list(full[0]["data"]["test"].get("class_counts", {}).keys())
        for label, r in sorted(best.items()):
            name = f"{slug(label)}-confusion.png"
            confusion_png(r, classes, fig_dir / name,
                          f"{task.name}: {label} ({task.primary} {fmt(primary_value(r, task))})")
            lines.append(f"**{label}** — {_one_line(r, task)}\n\n![confusion {label}](figures/{task.name}/{name})\n")

        curve_lines = []
        for label, r in sorted(best.items()):
            name = f"{slug(label)}-curves.png"
            if curves_png(r, fig_dir / name, f"{task.name}: {label} learning curves"):
                curve_lines.append(f"**{label}** ({fmt_budget(r)})\n\n![curves {label}](figures/{task.name}/{name})\n")
        if curve_lines:
            lines.append("## Learning curves (deep runs)\n")
            lines.extend(curve_lines)

        sweeps = sweep_tables(full, task)
        if sweeps.strip():
            lines.append("## Sweeps\n")
            lines.append("Each table is one suite block; values are test-split results of every point "
                         "of the sweep (a sweep over the test split is a sweep, not a model selection).\n")
            lines.append(sweeps)

        extra = task.extras.get("page_sections")
        if extra:
            lines.append(extra(full, fig_dir).rstrip() + "\n")

        lines.append("## All runs\n")
        lines.append(_all_runs_table(full, task))
        lines.append(_load_note(full))
    if quick:
        lines.append("## Quick runs (smoke tests on a small subset; not results)\n")
        lines.append(_all_runs_table(quick, task))
    return "\n".join(lines)


def _load_note(records: list[dict]) -> str:
    """Say so when timings were taken on a machine busier than its core count."""
    busy = []
    for r in records:
        loads = [x for x in (r["timings"].get("load_avg") or []) if x is not None]
        cores = r["device"].get("cpu_count") or 1
        if loads and max(loads) > cores:
            busy.append(max(loads) / cores)
    if not busy:
        return ""
    return (f"Timing caveat: {len(busy)} of {len(records)} runs were timed while the machine's "
            f"1-minute load average exceeded its core count (up to {max(busy):.1f}x), so their "
            "runtimes are inflated; compare speed with the benchmarks (`make bench`) instead.\n")


def _summary_header(task: Task) -> list[str]:
    head = ["method", "family"]
    if task.primary != "accuracy":
        head.append(task.primary)
    return head + ["accuracy [95% CI]", "balanced acc.", "macro-F1", "test n", "fit", "predict/img",
                   "device", "budget"]


SWEEP_MARK = "†"
TIMED_NOTE = ("Times of a sweep point that re-used cached features (e.g. another k on the same "
              "histograms) are those of the run that computed them.\n")
SWEEP_NOTE = (f"{SWEEP_MARK} best point of a sweep scored on the test split: a test-selected, "
              "optimistic number; the sweep table shows every point.\n")


def _label(r: dict) -> str:
    return r["label"] + (f" {SWEEP_MARK}" if r.get("sweep") else "")


def _summary_row(r: dict, task: Task, label: str, timed: dict | None = None) -> list[str]:
    m = r["metrics"]
    t = timed or r
    row = [_label(r), r.get("family", "")]
    if task.primary != "accuracy":
        row.append(fmt(m.get(task.primary)))
    return row + [fmt_ci(m), fmt(m.get("balanced_accuracy")), fmt(m.get("macro_f1")),
                  str(r["data"]["test"]["n"]), fmt_seconds(fit_seconds(t)),
                  f"{t['timings']['per_image_ms']:.2f} ms", r["device"].get("name", ""),
                  fmt_budget(r)]


def _one_line(r: dict, task: Task) -> str:
    """Method name and the parameters that differ from its defaults."""
    try:
        from .methods import get_method_spec

        defaults = get_method_spec(r["method"]).params()
    except Exception:  # a method no longer registered: show everything
        defaults = {}
    names = [k for k, v in r["params"].items()
             if k not in ("device", "n_jobs", "seed") and (k not in defaults or defaults[k] != v)]
    return (f"`{r['method']}` " + (param_str(r, names) or "defaults")
            + f"; seed {r['seed']}; {fmt_budget(r)}")


def _all_runs_table(records: list[dict], task: Task) -> str:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_label[r["label"]].append(r)
    vary = {label: varying_params(recs) for label, recs in by_label.items()}
    rows = []
    for i, r in enumerate(sort_records(records, task), 1):
        m = r["metrics"]
        row = [str(i), r["label"], param_str(r, vary[r["label"]]) or "–", str(r["seed"])]
        if task.primary != "accuracy":
            row.append(fmt(m.get(task.primary)))
        row += [fmt_ci(m), fmt(m.get("macro_f1")), fmt_seconds(run_seconds(r)),
                r["device"].get("type", ""), fmt_budget(r), f"`{r['key'][:8]}`"]
        rows.append(row)
    head = ["#", "method", "parameters", "seed"] + ([task.primary] if task.primary != "accuracy" else [])
    head += ["accuracy [95% CI]", "macro-F1", "time", "device", "budget", "run key"]
    return md_table(head, rows)


def render_index(tasks: list[Task], records_by_task: dict[str, list[dict]]) -> str:
    lines = [
        "# cvbench leaderboard\n",
        "Every number below comes from a stored run record (`leaderboard/results/<task>.jsonl`), "
        "rendered by `cvbench leaderboard`. Data variants are named: most tasks here run on the "
        "subsets in `../shared/data`, not the full datasets, and CPU runs use small recorded "
        "budgets, not the source studies' GPU protocols. Accuracy comes with a bootstrap 95% "
        "confidence interval.\n",
        "## Overview: best run per method family\n",
    ]
    rows = []
    for task in tasks:
        recs = [r for r in records_by_task.get(task.name, []) if not r.get("quick")]
        link = f"[{task.name}]({task.name}.md)"
        if not recs:
            rows.append([link, "–", "no runs yet", "–", "–", "–", f"`cvbench suite {task.name}`"])
            continue
        best = best_by(recs, task, "family")
        for fam in sorted(best, key=lambda f: FAMILIES.index(f) if f in FAMILIES else 9):
            r = best[fam]
            score = fmt_ci(r["metrics"])
            if task.primary != "accuracy":
                score = f"{task.primary} {fmt(r['metrics'].get(task.primary))}; acc. {score}"
            rows.append([link, f"{fam}: {_label(r)}", score, str(r["data"]["test"]["n"]),
                         fmt_seconds(run_seconds(timed_record(r, recs))), r["device"].get("name", ""),
                         fmt_budget(r)])
    lines.append(md_table(["task", "best (family: method)", "score [95% CI]", "test n", "runtime",
                           "device", "budget"], rows))
    lines.append("\n## Data behind each task\n")
    for task in tasks:
        variants = sorted({r["data"]["variant"] for r in records_by_task.get(task.name, [])
                           if not r.get("quick")})
        lines.append(f"- **{task.name}**: " + ("; ".join(variants) if variants else "no runs yet"))
    lines.append("\nRuntime = training + prediction time of that run. " + SWEEP_NOTE)
    lines.append("Each task page lists every run, sweep tables, confusion matrices and learning "
                 "curves.\n")
    return "\n".join(lines)


def render_all(root: Path | None = None, tasks: list[Task] | None = None) -> Path:
    """Re-render index.md and every task page from the records alone; returns index path."""
    from .env import is_main_process

    root = root or leaderboard_dir()
    tasks = tasks or list_tasks()
    if not is_main_process():
        return root / "index.md"
    records = {t.name: load_records(t.name, root) for t in tasks}
    import shutil

    for t in tasks:
        shutil.rmtree(root / "figures" / t.name, ignore_errors=True)  # no stale figures survive
        atomic_write_text(root / f"{t.name}.md", render_task(t, records[t.name], root))
    index = root / "index.md"
    atomic_write_text(index, render_index(tasks, records))
    return index
