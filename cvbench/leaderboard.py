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
    SECTIONS,
    SWEEP_NOTE,
    Page,
    fmt,
    fmt_budget,
    fmt_ci,
    fmt_seconds,
    marked,
    md_table,
)
from .results import RunRecord, load_records
from .tasks import Task, list_tasks

FAMILY_ORDER = ("classical", "deep", "pretrained", "baseline")


def _header(task: Task, records: list[RunRecord], quick: list[RunRecord]) -> list[str]:
    lines = [f"# {task.name} — {task.title}\n", f"Source study: {task.source}.\n"]
    if task.notes:
        lines.append(task.notes.strip() + "\n")
    if not records and not quick:
        lines.append(f"**No runs yet.** Make one with `cvbench suite {task.name}` "
                     f"(data expected at `$CVBENCH_DATA/{task.folder}`: {task.layout}).\n")
        return lines
    variants = sorted({r.variant for r in records}) or sorted({r.variant for r in quick})
    lines.append("Data: " + "; ".join(variants) + ".\n")
    lines.append(f"Primary metric: **{task.primary}**. Accuracy is shown with its bootstrap 95% "
                 f"confidence interval. Reproduce with `cvbench suite {task.name}`.\n")
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


def render_index(tasks: list[Task], records_by_task: dict[str, list[RunRecord]]) -> str:
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
        recs = [r for r in records_by_task.get(task.name, []) if not r.quick]
        link = f"[{task.name}]({task.name}.md)"
        if not recs:
            rows.append([link, "–", "no runs yet", "–", "–", "–", f"`cvbench suite {task.name}`"])
            continue
        page = Page(task=task, records=recs, quick=[], fig_dir=Path("."))
        best: dict[str, RunRecord] = {}
        for r in page.sorted():
            best.setdefault(r.family, r)
        for fam in sorted(best, key=lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 9):
            r = best[fam]
            score = fmt_ci(r)
            if task.primary != "accuracy":
                score = f"{task.primary} {fmt(r.metric(task.primary))}; acc. {score}"
            rows.append([link, f"{fam}: {marked(r)}", score, str(r.test_n),
                         fmt_seconds(page.timed(r).run_seconds), r.device_name, fmt_budget(r)])
    lines.append(md_table(["task", "best (family: method)", "score [95% CI]", "test n", "runtime",
                           "device", "budget"], rows))
    lines.append("\n## Data behind each task\n")
    for task in tasks:
        variants = sorted({r.variant for r in records_by_task.get(task.name, []) if not r.quick})
        lines.append(f"- **{task.name}**: " + ("; ".join(variants) if variants else "no runs yet"))
    lines.append("\nRuntime = training + prediction time of that run. " + SWEEP_NOTE)
    lines.append("Each task page lists every run, sweep tables, confusion matrices and learning "
                 "curves.\n")
    return "\n".join(lines)


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
    index = root / "index.md"
    atomic_write_text(index, render_index(tasks, records))
    return index
