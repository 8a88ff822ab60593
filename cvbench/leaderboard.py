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

from .aggregate import CSV_COLUMNS, cell_name, csv_rows, superseded
from .atomic import atomic_write_text
from .figures import cost_figure
from .format import fmt, fmt_budget, md_table
from .paths import leaderboard_dir
from .report import (
    DEFAULT_SECTIONS,
    RUNTIME_NOTE,
    SECTIONS,
    Page,
    fmt_rank,
    fmt_row_metric,
    fmt_runtime,
    fmt_under,
    headline_choice,
    marks_note,
    row_label,
)
from .results import RunRecord, load_records
from .tasks import Task, list_tasks


def _header(task: Task, records: list[RunRecord], quick: list[RunRecord],
            old: list[RunRecord] = ()) -> list[str]:
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
    if old:
        labels = "; ".join(sorted({r.label for r in old}))
        lines.append(f"Not shown: {len(old)} older test-split record(s) of sweep points a later "
                     f"validation selection turned down ({labels}); they stay in "
                     f"`results/{task.name}.jsonl`.\n")
    return lines


def render_task(task: Task, records: list[RunRecord], fig_dir: Path) -> str:
    """The markdown of one task page; figures are written to `fig_dir`. Records a later
    validation selection superseded are left out, and counted (`aggregate.superseded`)."""
    records, old = superseded(records)
    full = [r for r in records if not r.quick]
    quick = [r for r in records if r.quick]
    lines = _header(task, full, quick, old)
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


def render_index(tasks: list[Task], records_by_task: dict[str, list[RunRecord]],
                 fig_dir: Path | None = None) -> str:
    lines = [
        "# cvbench leaderboard\n",
        "Every number below comes from a stored run record (`leaderboard/results/<task>.jsonl`), "
        "rendered by `cvbench leaderboard`; `leaderboard/results.csv` holds every configuration "
        "for tools. Data variants are named: most tasks here run on subsets of the datasets (the "
        "data column says which), not the full datasets, and CPU runs use small recorded "
        "budgets, not the source studies' GPU protocols. Each score comes with the bootstrap 95% "
        "interval of that metric.\n",
        "## Overview: the headline of each method family\n",
        "A family's headline is its configuration with the best validation score (on data carved "
        "from the training split, never the test split), in the task's default cell: the training "
        "and test conditions it names. Rank: its rank interval among every method of the task on "
        "the same test items (paired tests, Holm-adjusted; see the task page).\n",
    ]
    rows = []
    pictures = []
    quick_rows = []
    for task in tasks:
        all_recs = records_by_task.get(task.name, [])
        recs = [r for r in all_recs if not r.quick]
        link = f"[{task.name}]({task.name}.md)"
        quick_rows += [[link, r.label, r.method, fmt(r.metric(task.primary)), str(r.test_n),
                        str(r.data.get("train", {}).get("n", "–")), r.started[:10]]
                       for r in all_recs if r.quick]
        if not recs:
            rows.append([link, "–", "no runs yet", "–", "–", "–", "–", "–", "–", "–", "–",
                         f"`cvbench suite {task.name}`"])
            continue
        page = Page(task=task, records=recs, quick=[], fig_dir=fig_dir or Path("."))
        extra = task_overview(task, page)
        for row, n, how in page.table.headlines:
            score = f"{task.primary} {fmt_row_metric(row, task.primary)}"
            for name in task.overview_metrics:
                score += f"; {name} {fmt_row_metric(row, name)}"
            if task.primary != "accuracy":
                score += f"; accuracy {fmt(row.mean('accuracy'))}"
            cell = cell_name(row.cell) or "no condition"
            trained = f"{row.train_n}" + (f" ({cell})" if row.cell else "")
            data = "GENERATED FIXTURE" if row.first.is_fixture else row.variant
            rows.append([link, f"{row.family}: {row_label(row, how)}", score,
                         fmt_under(page.table.robustness_of(row)),
                         f"{fmt_rank(row)} of {row.rank_of}" if row.rank else "–",
                         headline_choice(row, n, how), trained, f"{row.test_n}" + (f" ({extra})" if extra else ""),
                         fmt_runtime(row), row.first.device_name, fmt_budget(row.first), data])
        if fig_dir is not None:
            path = fig_dir / f"{task.name}-score-vs-runtime.png"
            if cost_figure(page.table.rows, task.primary, path, f"{task.name}: {task.primary} against runtime"):
                pictures.append(f"### {task.name}\n\n![{task.name}: {task.primary} against runtime]"
                                f"(figures/index/{path.name})\n")
    lines.append(md_table(["task", "headline (family: method)", "score [95% CI]",
                           "under corruption (mean, severity 3)", "rank",
                           "chosen by", "trained on (N, cell)", "tested on (n)", "runtime",
                           "device", "budget", "data"], rows))
    lines.append(marks_note("\n".join(lines)))
    lines.append(RUNTIME_NOTE)
    if pictures:
        lines.append("## Accuracy against cost\n")
        lines.append("One point per row of each task page (mean over seeds, with its 95% interval), "
                     "coloured by family; runtime is the row's own fit + predict, log scale. The "
                     "cheap-and-good methods sit top left.\n")
        lines.extend(pictures)
    if quick_rows:
        lines.append("## Quick runs (smoke tests on small subsets; not results)\n")
        lines.append("`--quick` runs a few images per class with the suites' quick overrides, to "
                     "check that a method runs. They are never compared with a study or ranked.\n")
        lines.append(md_table(["task", "label", "method", "score", "test n", "train n", "run on"], quick_rows))
    lines.append("\n## Data behind each task\n")
    for task in tasks:
        variants = sorted({r.variant for r in records_by_task.get(task.name, []) if not r.quick})
        lines.append(f"- **{task.name}**: " + ("; ".join(variants) if variants else "no runs yet"))
    lines.append("")
    return "\n".join(lines)


def task_overview(task: Task, page: Page) -> str:
    """A task's own fact about its test set for the overview (its report.py's
    `overview_note(page)`, e.g. retinopathy's test grade mix), or ''."""
    mod = task.module("report")
    note = getattr(mod, "overview_note", None) if mod else None
    return note(page) if note else ""


def results_csv(tasks: list[Task], records_by_task: dict[str, list[RunRecord]]) -> str:
    """Every configuration of every task as one CSV row (cvbench.aggregate.csv_rows)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for task in tasks:
        recs = [r for r in records_by_task.get(task.name, []) if not r.quick]
        if recs:
            writer.writerows(csv_rows(Page(task=task, records=recs, quick=[], fig_dir=Path(".")).table))
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
    current = {name: superseded(recs)[0] for name, recs in records.items()}
    atomic_write_text(index, render_index(tasks, current, staging))
    _swap_in(staging, figures / "index")
    atomic_write_text(root / "results.csv", results_csv(tasks, current))
    return index
