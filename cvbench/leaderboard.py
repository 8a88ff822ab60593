"""Render leaderboard/index.md and leaderboard/<task>.md (+ figures) from stored records only.

A task page is the task's header followed by the sections its task.toml lists (shared ones in
cvbench.report, the task's own in its report.py). Rendering is deterministic: the same records
give byte-identical pages and figures. Figures are written into a fresh folder that replaces
the old one only when the whole page rendered, so a crash never leaves a page without its
pictures. Records that do not validate are reported (file:line) and left out, never fatal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .atomic import atomic_write_text
from .paths import leaderboard_dir
from .report import (
    DEFAULT_SECTIONS,
    ROW_NOTE,
    SECTIONS,
    Page,
    Row,
    cost_figure,
    fmt,
    fmt_budget,
    fmt_row_metric,
    fmt_seconds,
    label_rows,
    md_table,
    pooled_interval,
    row_label,
)
from .results import RunRecord, load_records
from .tasks import Task, list_tasks

FAMILY_ORDER = ("classical", "deep", "pretrained", "baseline")


def _header(task: Task, records: list[RunRecord], quick: list[RunRecord]) -> list[str]:
    lines = [f"# {task.name} — {task.title}\n",
             f"Source study: {task.source} ([what it did and claimed](../docs/studies.md#{task.name})).\n"]
    if task.notes:
        lines.append(task.notes.strip() + "\n")
    if not records and not quick:
        lines.append(f"**No runs yet.** Make one with `cvbench suite {task.name}` "
                     f"(data expected at `$CVBENCH_DATA/{task.folder}`: {task.layout}).\n")
        return lines
    variants = sorted({r.variant for r in records}) or sorted({r.variant for r in quick})
    lines.append("Data: " + "; ".join(variants) + ".\n")
    lines.append(f"Primary metric: **{task.primary}**. Every score comes with its bootstrap 95% "
                 f"interval. Reproduce with `cvbench suite {task.name}`.\n")
    return lines


def render_task(task: Task, records: list[RunRecord], fig_dir: Path) -> str:
    """The markdown of one task page; figures are written to `fig_dir`."""
    full = [r for r in records if not r.quick]
    quick = [r for r in records if r.quick]
    lines = _header(task, full, quick)
    if not full and not quick:
        return "\n".join(lines)
    page = Page(task=task, records=full, quick=quick, fig_dir=fig_dir)
    sections = {**SECTIONS, **task.report_sections()}
    for name in task.sections or DEFAULT_SECTIONS:
        if name not in sections:
            raise ValueError(f"task {task.name!r} lists unknown page section {name!r}; "
                             f"known: {', '.join(sorted(sections))}")
        if not full and name != "quick":
            continue
        text = sections[name](page)
        if text and text.strip():
            lines.append(text.rstrip() + "\n")
    return "\n".join(lines)


def family_best(page: Page) -> list[tuple[Row, bool]]:
    """(row, chosen among several) of the best configuration of each family and data variant."""
    fam_rows: dict[tuple[str, str], list[Row]] = {}
    for r in label_rows(page):
        fam_rows.setdefault((r.family, r.variant), []).append(r)
    order = sorted(fam_rows, key=lambda k: (FAMILY_ORDER.index(k[0]) if k[0] in FAMILY_ORDER else 9, k[1]))
    return [(fam_rows[k][0], len(fam_rows[k]) > 1) for k in order]


def render_index(tasks: list[Task], records_by_task: dict[str, list[RunRecord]],
                 fig_dir: Path | None = None) -> str:
    lines = [
        "# cvbench leaderboard\n",
        "Every number below comes from a stored run record (`leaderboard/results/<task>.jsonl`), "
        "rendered by `cvbench leaderboard`; `leaderboard/results.csv` holds the same rows for tools. "
        "Data variants are named: most tasks here run on the subsets each data line names, not the "
        "full datasets, and CPU runs use small recorded budgets, not the source studies' GPU "
        "protocols. Each score comes with the bootstrap 95% interval of that metric.\n",
        "## Overview: best configuration of each method family\n",
    ]
    rows = []
    pictures = []
    for task in tasks:
        recs = [r for r in records_by_task.get(task.name, []) if not r.quick]
        link = f"[{task.name}]({task.name}.md)"
        if not recs:
            rows.append([link, "–", "no runs yet", "–", "–", "–", "–", f"`cvbench suite {task.name}`"])
            continue
        page = Page(task=task, records=recs, quick=[], fig_dir=fig_dir or Path("."))
        for row, chosen in family_best(page):
            score = f"{task.primary} {fmt_row_metric(row, task.primary)}"
            if task.primary != "accuracy":
                score += f"; accuracy {fmt(row.mean('accuracy'))}"
            data = "GENERATED FIXTURE" if row.best.is_fixture else row.variant
            rows.append([link, f"{row.family}: {row_label(row, chosen)}", score, str(row.best.test_n),
                         fmt_seconds(row.run_seconds(page)), row.best.device_name, fmt_budget(row.best),
                         data])
        if fig_dir is not None:
            path = fig_dir / f"{task.name}-score-vs-runtime.png"
            if cost_figure(page, label_rows(page), path, f"{task.name}: {task.primary} against runtime"):
                pictures.append(f"### {task.name}\n\n![{task.name}: {task.primary} against runtime]"
                                f"(figures/index/{path.name})\n")
    lines.append(md_table(["task", "best (family: method)", "score [95% CI]", "test n", "runtime",
                           "device", "budget", "data"], rows))
    lines.append(ROW_NOTE)
    if pictures:
        lines.append("## Accuracy against cost\n")
        lines.append("One point per method's configuration (mean over seeds, with its 95% interval), "
                     "coloured by family; runtime is fit + predict of that run, log scale. The "
                     "cheap-and-good methods sit top left.\n")
        lines.extend(pictures)
    lines.append("\n## Data behind each task\n")
    for task in tasks:
        variants = sorted({r.variant for r in records_by_task.get(task.name, []) if not r.quick})
        lines.append(f"- **{task.name}**: " + ("; ".join(variants) if variants else "no runs yet"))
    lines.append("\nRuntime = training + prediction time of that run. Each task page has every "
                 "method's row, the sweeps, confusion matrices and learning curves.\n")
    return "\n".join(lines)


CSV_COLUMNS = ("task", "variant", "label", "method", "family", "metric", "mean", "sd", "n_seeds",
               "seeds", "ci_low", "ci_high", "test_selected", "chosen_by", "runtime_s", "device",
               "budget", "run_keys")


def results_rows(tasks: list[Task], records_by_task: dict[str, list[RunRecord]]) -> list[dict]:
    """One row per (task, data variant, method label): what results.csv holds."""
    out = []
    for task in tasks:
        recs = [r for r in records_by_task.get(task.name, []) if not r.quick]
        if not recs:
            continue
        page = Page(task=task, records=recs, quick=[], fig_dir=Path("."))
        for row in label_rows(page):
            values = row.values(task.primary)
            ci = pooled_interval(row.records, task.primary)
            out.append({
                "task": task.name, "variant": row.variant, "label": row.label, "method": row.best.method,
                "family": row.family, "metric": task.primary,
                "mean": round(float(values.mean()), 6) if len(values) else "",
                "sd": round(float(values.std(ddof=1)), 6) if len(values) > 1 else "",
                "n_seeds": len(row.records), "seeds": " ".join(map(str, row.seeds)),
                "ci_low": round(ci[0], 6) if ci else "", "ci_high": round(ci[1], 6) if ci else "",
                "test_selected": row.test_selected, "chosen_by": row.chosen_by,
                "runtime_s": round(row.run_seconds(page), 3), "device": row.best.device_name,
                "budget": fmt_budget(row.best), "run_keys": " ".join(r.key for r in row.records),
            })
    return out


def results_csv(tasks: list[Task], records_by_task: dict[str, list[RunRecord]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(results_rows(tasks, records_by_task))
    return buf.getvalue()


def _swap_in(new: Path, final: Path) -> None:
    """Replace folder `final` by `new` (old contents removed only after the rename)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def render_all(root: Path | None = None, tasks: list[Task] | None = None) -> Path:
    """Re-render index.md and every task page from the records alone; returns index path."""
    from .env import is_main_process

    root = Path(root) if root else leaderboard_dir()
    tasks = tasks or list_tasks()
    if not is_main_process():
        return root / "index.md"
    records = {t.name: load_records(t.name, root) for t in tasks}
    figures = root / "figures"
    for t in tasks:
        staging = figures / f".{t.name}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            text = render_task(t, records[t.name], staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_write_text(root / f"{t.name}.md", text)
        if any(staging.iterdir()):
            _swap_in(staging, figures / t.name)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(figures / t.name, ignore_errors=True)
    staging = figures / ".index.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    index = root / "index.md"
    atomic_write_text(index, render_index(tasks, records, staging))
    _swap_in(staging, figures / "index")
    atomic_write_text(root / "results.csv", results_csv(tasks, records))
    return index
