"""Task pages: the shared sections, formatting the tables cvbench.aggregate builds.

A task page is a list of sections named in the task's `task.toml` (`[report] sections`).
The shared ones are here (`SECTIONS`); a task adds its own in
`cvbench/tasks/<task>/report.py`. Each section is a function of a `Page` (the task, its
records, its aggregated table, where figures go) returning markdown. Sections read
`RunRecord`s and aggregate tables only: nothing here asks the method registry or reads data,
and nothing here chooses, pools or tests (cvbench.aggregate does).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .aggregate import (
    CORRUPTION,
    Row,
    TaskTable,
    cell_name,
    corruption_of,
    task_classes,
    task_table,
)
from .compare import (
    N_BOOT,
    comparison_config,
    comparison_families,
    family_order,
    family_title,
    paired_quantities,
    variant_name,
    variant_rank,
)
from .figures import confusion_png, cost_figure, curves_png, robustness_figure
from .format import (
    SWEEP_MARK,
    details,
    fmt,
    fmt_budget,
    fmt_ci,
    fmt_seconds,
    md_table,
    num,
    param_str,
    slug,
    sort_key,
    values_of,
    varying_params,
)
from .results import BUSY_LOAD, RunRecord

CHOSEN_MARK = SWEEP_MARK  # a choice made on the test split
DIRTY_MARK = "‡"  # the record came from uncommitted code


# ---------------------------------------------------------------- the page context
@dataclass
class Page:
    """What a section sees: the task (its config), its full and quick records, their
    aggregated table, and the folder its figures go to (`figures/<task>/` in the links)."""

    task: Any
    records: list[RunRecord]
    quick: list[RunRecord]
    fig_dir: Path
    figures: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.task.primary

    @functools.cached_property
    def table(self) -> TaskTable:
        return task_table(self.task, self.records)

    @functools.cached_property
    def classes(self) -> tuple[str, ...]:
        return task_classes(self.task, self.records or self.quick)

    def figure_path(self, name: str) -> tuple[Path, str]:
        """(file to write, link for the page) of a figure; names must be unique per page."""
        if name in self.figures:
            raise ValueError(f"figure name {name!r} used twice on the {self.task.name} page")
        self.figures.append(name)
        return self.fig_dir / name, f"figures/{self.task.name}/{name}"

    def value(self, rec: RunRecord) -> float:
        v = rec.metric(self.primary)
        if v is None:
            v = rec.metric("accuracy")
        return v if v is not None else float("-inf")

    def sorted(self, records: list[RunRecord] | None = None) -> list[RunRecord]:
        recs = self.records if records is None else records
        return sorted(recs, key=lambda r: (-self.value(r), r.label, r.key))

    def shown_rows(self) -> list[Row]:
        """The table's rows in a stable order (label, then conditions)."""
        return sorted(self.table.rows, key=lambda r: (r.label, cell_name(r.cell), r.variant))


# ---------------------------------------------------------------- formatting aggregate rows
def row_name(row: Row) -> str:
    """The row's label and, when it has conditions, its cell."""
    cell = cell_name(row.cell)
    return row.label + (f" · {cell}" if cell else "")


def seed_note(row: Row) -> str:
    return f" of {len(row.records)} seeds" if len(row.records) > 1 else ""


def fmt_row_metric(row: Row, metric: str, digits: int = 4) -> str:
    """'0.4071 [0.382, 0.434]' for one seed; '0.4012 ± 0.0061 (3 seeds) [0.385, 0.417]'."""
    mean = row.mean(metric)
    if mean is None:
        return "–"
    ci = row.interval(metric)
    ci_text = f" [{num(ci[0])}, {num(ci[1])}]" if ci else ""
    if len(row.records) == 1:
        return f"{mean:.{digits}f}{ci_text}"
    return f"{mean:.{digits}f} ± {row.sd(metric):.{digits}f} ({len(row.records)} seeds){ci_text}"


def fmt_rank(row: Row) -> str:
    if not row.rank:
        return "–"
    lo, hi = row.rank
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def fmt_runtime(row: Row) -> str:
    rt = row.runtime()
    note = rt.note()
    return fmt_seconds(rt.seconds) + (f" ({note})" if note else "")


def row_label(row: Row, headline_choice: str = "") -> str:
    marks = ""
    if row.test_selected or headline_choice == "test":
        marks += f" {CHOSEN_MARK}"
    if any(r.dirty for r in row.records):
        marks += f" {DIRTY_MARK}"
    return row_name(row) + marks


def chosen_by(row: Row) -> str:
    if row.selection == "single":
        return "only configuration"
    if row.selection == "validation":
        score, source = row.validation
        return f"validation ({row.candidates} points; {source}: {score:.3f})"
    return f"test split ({row.candidates} configurations) {CHOSEN_MARK}"


SEEDS_NOTE = ("A configuration with several seeds shows their mean ± sd; its interval resamples "
              "each test set (paired across seeds that share one) and averages the seeds.")
CHOSEN_NOTE = (f"{CHOSEN_MARK} chosen on the test split: the best of several configurations by their "
               "test score, because they had no validation score to choose by; the number is "
               "optimistic and the sweep tables show every point.")
DIRTY_NOTE = f"{DIRTY_MARK} the record came from uncommitted code (not reproducible from a revision)."


def marks_note(text: str) -> str:
    """The notes a table needs: the seeds note always, the marks' notes where they appear."""
    notes = [SEEDS_NOTE]
    if CHOSEN_MARK in text:
        notes.append(CHOSEN_NOTE)
    if DIRTY_MARK in text:
        notes.append(DIRTY_NOTE)
    return " ".join(notes) + "\n"
RUNTIME_NOTE = ("Runtime: fit + predict of the row's own run(s), cold (no stage served by a cache) "
                "where one was; \"mean of N\" over seeds; \"warm\" names the stages a cache "
                "served.\n")


def rank_note(page: Page) -> str:
    how = page.table.ranked
    if not how:
        return ""
    return (f"Rank intervals: every pair of rows on the same test items is compared, here with {how} "
            "(McNemar's exact test for two single accuracy runs on one test set; otherwise a bootstrap "
            "of the paired difference, each test set resampled by the metric's own rule, with a normal "
            "approximation). The p-values are Holm-adjusted over all pairs; a row's interval runs from "
            "1 + the rows significantly better than it to n - the rows significantly worse (95%). Rows "
            "whose intervals overlap cannot be told apart.\n")


# ---------------------------------------------------------------- shared sections
def section_summary(page: Page) -> str:
    """The answer first: the headline of each family, then every row with its rank."""
    task, table = page.task, page.table
    metrics = [task.primary] + (["accuracy"] if task.primary != "accuracy" else [])
    head = ["family", "method", *(f"{m} [95% CI]" for m in metrics), "rank", "chosen by",
            "test n", "trained on", "runtime", "device", "budget"]
    body = []
    for row, n, how in table.headlines:
        body.append([row.family, row_label(row, how), *(fmt_row_metric(row, m) for m in metrics),
                     f"{fmt_rank(row)} of {row.rank_of}" if row.rank else "–",
                     headline_choice(row, n, how), str(row.test_n), str(row.train_n),
                     fmt_runtime(row), row.first.device_name, fmt_budget(row.first)])
    cell = table.default_cell
    cell_text = ("Headlines are taken from the task's default cell ("
                 + "; ".join(f"{k} = {' or '.join(repr(v) if v else 'absent' for v in vals)}"
                             for k, vals in cell.items())
                 + "); the other cells are below.\n") if cell else ""
    out = ["## Best of each family\n",
           "Each family's headline is its configuration with the best validation score (scored "
           "on data carved from the training split, never the test split).\n", cell_text,
           md_table(head, body)]
    head = ["method", "family", *(f"{m} [95% CI]" for m in metrics), "rank", "balanced acc.",
            "macro-F1", "seeds", "chosen by", "runtime", "predict/img", "budget"]
    body = []
    for r in table.rows:
        body.append([row_label(r), r.family, *(fmt_row_metric(r, m) for m in metrics),
                     f"{fmt_rank(r)} of {r.rank_of}" if r.rank else "–",
                     fmt(r.mean("balanced_accuracy")), fmt(r.mean("macro_f1")),
                     ", ".join(map(str, r.seeds)), chosen_by(r), fmt_runtime(r),
                     f"{r.first.per_image_ms:.2f} ms", fmt_budget(r.first)])
    out += ["## Every method\n", md_table(head, body)]
    out += [marks_note("\n".join(out)), rank_note(page), RUNTIME_NOTE]
    return "\n".join(x for x in out if x)


def headline_choice(row: Row, n: int, how: str) -> str:
    if how == "single":
        return "the family's only row"
    if how == "validation":
        score, source = row.validation
        return f"validation, of {n} ({source}: {score:.3f})"
    return f"test split, of {n} {CHOSEN_MARK}"


def section_picture(page: Page) -> str:
    path, link = page.figure_path(f"{page.task.name}-score-vs-runtime.png")
    if not cost_figure(page.table.rows, page.primary, path, f"{page.task.name}: {page.primary} against runtime"):
        return ""
    return (f"![{page.primary} against runtime]({link})\n\nEach point is one row of the table above "
            "(mean over seeds), with its 95% interval; runtime (the row's own cold run where there is "
            "one) on a log scale.\n")


def section_confusion(page: Page) -> str:
    """The confusion matrix of every row's shown configuration: its first seed, said so."""
    out = ["## Confusion matrices (each row's configuration, its first seed)\n"]
    classes = list(page.classes)
    for row in page.shown_rows():
        r = row.first
        name = row_name(row)
        path, link = page.figure_path(f"{slug(name)}-{r.key[:8]}-confusion.png")
        confusion_png(np.asarray(r.metrics["confusion"]), classes, path,
                      f"{page.task.name}: {name}, seed {r.seed} ({page.primary} {fmt(page.value(r))})")
        out.append(f"**{name}** — seed {r.seed}{seed_note(row)}; {one_config_line(row)}\n\n"
                   f"![confusion {name}]({link})\n")
    return "\n".join(out)


def one_config_line(row: Row) -> str:
    """Method name, the parameters that differ from its defaults, budget."""
    r = row.first
    defaults = r.defaults
    names = [k for k, v in row.params.items() if k not in defaults or defaults[k] != v]
    return f"`{r.method}` " + (param_str(r, names) or "defaults") + f"; {fmt_budget(r)}"


def section_per_class(page: Page) -> str:
    """Per-class recall of every row's first-seed run, in the task's class order."""
    classes = list(page.classes)
    if len(classes) > 20:
        return ""
    rows = []
    for row in page.shown_rows():
        per = row.first.metrics.get("per_class") or {}
        rows.append([row_name(row), str(row.first.seed)]
                    + [fmt((per.get(c) or {}).get("recall"), 3) for c in classes])
    return ("## Per-class recall (each row's configuration, its first seed)\n\n"
            + md_table(["method", "seed", *classes], rows))


def section_curves(page: Page) -> str:
    out = []
    for row in page.shown_rows():
        r = row.first
        if not r.curves.get("epoch"):
            continue
        name = row_name(row)
        path, link = page.figure_path(f"{slug(name)}-{r.key[:8]}-curves.png")
        if curves_png(r, path, f"{page.task.name}: {name} learning curves (seed {r.seed})"):
            out.append(f"**{name}** (seed {r.seed}{seed_note(row)}; {fmt_budget(r)})\n\n![curves {name}]({link})\n")
    return ("## Learning curves (deep runs)\n\n" + "\n".join(out)) if out else ""


def section_stages(page: Page) -> str:
    rows = []
    for row in page.shown_rows():
        t = row.first.timings
        stages = {k: v for k, v in t.items()
                  if k.endswith("_s") and k not in ("fit_s", "predict_s", "total_s") and isinstance(v, (int, float))}
        if stages:
            hits = row.first.cache_hits
            cached = "not recorded" if hits is None else (", ".join(hits) or "none (cold)")
            rows.append([row_name(row), f"{row.first.seed}",
                         ", ".join(f"{k.removesuffix('_s')} {fmt_seconds(v)}" for k, v in sorted(stages.items())),
                         cached])
    if not rows:
        return ""
    return ("### Runtime per stage (each row's own first-seed run)\n\n"
            + md_table(["method", "seed", "stages", "served by a cache"], rows))


def sweep_tables(records: list[RunRecord], metric: str) -> str:
    """For every suite block that swept parameters or conditions: `metric` over the values."""
    blocks: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.sweep:
            blocks[(r.label, tuple(r.sweep), r.seed)].append(r)
    out = []
    for (label, swept, seed), recs in sorted(blocks.items()):
        if len(recs) < 2:
            continue
        seed_note = f", seed {seed}" if seed else ""
        out.append(f"#### {label}: {metric} over {' × '.join(swept)}{seed_note}\n")
        if len(swept) == 1:
            (k,) = swept
            recs = sorted(recs, key=lambda r: sort_key(values_of(r).get(k)))
            out.append(md_table([k] + [str(values_of(r).get(k)) for r in recs],
                                [[metric] + [fmt(r.metric(metric)) for r in recs]]))
        else:
            row_key, col_key, *rest = swept
            groups: dict[tuple, list[RunRecord]] = defaultdict(list)
            for r in recs:
                groups[tuple(values_of(r).get(k) for k in rest)].append(r)
            for fixed, grecs in sorted(groups.items(), key=lambda kv: [sort_key(x) for x in kv[0]]):
                if rest:
                    out.append("_" + ", ".join(f"{k}={v}" for k, v in zip(rest, fixed)) + "_\n\n")
                cols = sorted({values_of(r).get(col_key) for r in grecs}, key=sort_key)
                rows = sorted({values_of(r).get(row_key) for r in grecs}, key=sort_key)
                cell = {(values_of(r).get(row_key), values_of(r).get(col_key)): r for r in grecs}
                table = [[f"{row_key}={rv}"] + [fmt(cell[(rv, cv)].metric(metric)) if (rv, cv) in cell else "–"
                                                 for cv in cols] for rv in rows]
                out.append(md_table([f"{row_key} \\ {col_key}"] + [str(c) for c in cols], table))
        out.append("")
    return "\n".join(out)


def validation_tables(page: Page) -> str:
    """For every row its block chose on validation (select = "validation"): the validation
    score of every point, the chosen one in bold (only it ran on the test split)."""
    out = []
    for row in page.shown_rows():
        sel = row.first.info.get("selection") or {}
        points = sel.get("points") or []
        if len(points) < 2:
            continue
        keys = sorted({k for p in points for k, v in p["params"].items()
                       if len({json_key(q["params"].get(k)) for q in points}) > 1})
        body = []
        for p in points:
            chosen = json_key(p["params"]) == sel.get("chosen_params")
            cells = [str(p["params"].get(k)) for k in keys] + [fmt(p["mean"])]
            body.append([f"**{c}**" if chosen else c for c in cells])
        out.append(f"#### {row_name(row)}: validation {sel.get('metric')} ({sel.get('carve')})\n")
        out.append(md_table([*keys, f"validation {sel.get('metric')}"], body))
    return "\n".join(out)


def json_key(x: Any) -> str:
    import json

    return json.dumps(x, sort_keys=True, default=str)


def section_sweeps(page: Page) -> str:
    sweeps = sweep_tables(page.records, page.primary)
    chosen = validation_tables(page)
    out = []
    if chosen.strip():
        out.append("### Chosen on validation\n\nEach table is one block whose point was chosen on "
                   "the validation carve of train before the test (bold: the chosen point, the only "
                   "one scored on the test split).\n\n" + chosen)
    if sweeps.strip():
        out.append("### Scored on the test split\n\nEach table is one suite block; values are "
                   "test-split results of every point of the sweep (the study's own grids: a sweep "
                   "over the test split is a table, not a model selection).\n\n" + sweeps)
    return ("## Sweeps\n\n" + "\n".join(out)) if out else ""


def section_all_runs(page: Page, records: list[RunRecord] | None = None) -> str:
    records = page.records if records is None else records
    task = page.task
    by_label: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_label[r.label].append(r)
    vary = {label: varying_params(recs) for label, recs in by_label.items()}
    rows = []
    for i, r in enumerate(page.sorted(records), 1):
        row = [str(i), r.label, param_str(r, vary[r.label]) or "–", str(r.seed)]
        if task.primary != "accuracy":
            row.append(fmt(r.metric(task.primary)))
        row += [fmt_ci(r), fmt(r.metric("macro_f1")), fmt_seconds(r.run_seconds),
                r.device_type, fmt_budget(r), f"`{r.key[:8]}`"]
        rows.append(row)
    head = ["#", "method", "parameters", "seed"] + ([task.primary] if task.primary != "accuracy" else [])
    head += ["accuracy [95% CI]", "macro-F1", "time", "device", "budget", "run key"]
    if records is page.records:
        return "## All runs\n\n" + md_table(head, rows) + "\n" + load_note(records)
    return md_table(head, rows)


def section_quick(page: Page) -> str:
    if not page.quick:
        return ""
    return ("## Quick runs (smoke tests on a small subset; not results)\n\n"
            + section_all_runs(page, page.quick))


def load_note(records: list[RunRecord]) -> str:
    """Say so when timings were taken on a machine busier than its core count."""
    busy = [r.busy_factor for r in records if r.busy]
    if not busy:
        return ""
    return (f"Timing caveat: {len(busy)} of {len(records)} runs were timed while the machine's "
            f"1-minute load average exceeded {BUSY_LOAD:g}x its core count (up to "
            f"{max(busy):.1f}x; a run's own threads account for about 1x), so their "
            "runtimes are inflated; compare speed with the benchmarks (`make bench`) instead.\n")


def section_groups(page: Page) -> str:
    """Max, min, mean, std and gap of accuracy across the groups of every groups:* metric."""
    specs = [m.removeprefix("groups:") for m in page.task.metrics if m.startswith("groups:")]
    if not specs:
        return ""
    order = sorted(page.records, key=lambda r: (r.method, r.label, corruption_of(r) or "",
                                                variant_name(page, r), r.seed))
    rows = []
    for r in order:
        name = r.label + (f" · test images {corruption_of(r)}" if corruption_of(r) else "")
        row = [name, variant_name(page, r), str(r.seed)]
        for spec in specs:
            s = r.group_summary(spec)
            row += [fmt(s.get(k), 3) for k in ("max", "min", "mean", "std", "gap")]
        rows.append(row)
    head = ["run", "training set", "seed"] + [f"{s.replace('*', '×')} {k}" for s in specs
                                              for k in ("max", "min", "mean", "std", "gap")]
    what = " and ".join(s.replace("*", " × ") for s in specs)
    return ("## Disparity across groups\n\nMax, min, mean, population std and max − min gap of "
            f"test accuracy across the groups of {what}.\n\n" + md_table(head, rows))


def section_paired(page: Page) -> str:
    """Reference vs contrast (and every other variant against both), per family and seed,
    with paired bootstrap intervals of the differences."""
    cfg = comparison_config(page)
    ref, con = cfg.get("reference"), cfg.get("contrast")
    if not ref or not con:
        return ""
    fams = comparison_families(page)
    out = []
    for fk in family_order(fams):
        by_seed: dict[int, list[RunRecord]] = defaultdict(list)
        for r in fams[fk]:
            by_seed[r.seed].append(r)
        for seed, recs in sorted(by_seed.items()):
            recs = sorted(recs, key=lambda r: variant_rank(page, r))
            names = [variant_name(page, r) for r in recs]
            if ref not in names or con not in names or len(set(names)) != len(names):
                continue
            values = paired_quantities(page, recs)
            if values is None:
                continue
            i_ref, i_con = names.index(ref), names.index(con)
            others = [i for i in range(len(recs)) if i not in (i_ref, i_con)]
            out.append(f"### {family_title(page, recs)}, seed {seed}\n")
            rows = [[name, fmt(float(val[i_ref]), 3), fmt(float(val[i_con]), 3),
                     _fmt_diff(float(val[i_con] - val[i_ref]), smp[i_con] - smp[i_ref])]
                    for name, val, smp in values]
            out.append(md_table(["quantity", ref, con, f"{con} − {ref} [95% CI]"], rows))
            for i in others:
                rows = [[name, fmt(float(val[i]), 3),
                         _fmt_diff(float(val[i] - val[i_con]), smp[i] - smp[i_con]),
                         _fmt_diff(float(val[i] - val[i_ref]), smp[i] - smp[i_ref])]
                        for name, val, smp in values]
                out.append(f"**{names[i]}** against {con} (does it recover?) and against {ref} "
                           "(what is left):\n")
                out.append(md_table(["quantity", names[i], f"− {con} [95% CI]", f"− {ref} [95% CI]"], rows))
    if not out:
        return ""
    head = (f"## {cfg.get('title', f'{con} vs {ref}')} (paired bootstrap)\n\n"
            f"Differences in test accuracy between runs of the same model and seed, with 95% "
            f"percentile intervals from {N_BOOT} paired bootstrap resamples of the test items, "
            f"stratified by {cfg.get('strata_name', cfg.get('strata', 'class'))}. Bold: the interval "
            "excludes 0. The interval covers test-set sampling only; seed-to-seed training "
            "variance is shown separately where several seeds ran. Intervals of extremes (worst "
            "group, gap) are rough: the bootstrap of a max or min is biased.\n\n")
    return head + "\n".join(out)


def section_seeds(page: Page) -> str:
    """Mean ± sd over training seeds, and the difference to the reference of the same seed."""
    cfg = comparison_config(page)
    ref = cfg.get("reference")
    spec = cfg.get("strata_name", cfg.get("strata", ""))

    def ms(x: np.ndarray) -> str:
        x = x[np.isfinite(x)]
        if not len(x):
            return "–"
        return f"{x.mean():+.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x[0]:+.3f} (1 seed)"

    fams = comparison_families(page)
    rows = []
    for fk in family_order(fams):
        by_variant: dict[str, list[RunRecord]] = defaultdict(list)
        for r in fams[fk]:
            by_variant[variant_name(page, r)].append(r)
        if max(len(v) for v in by_variant.values()) < 2:
            continue
        title = family_title(page, fams[fk])
        reference = {r.seed: r for r in by_variant.get(ref, [])}
        for name, recs in sorted(by_variant.items(), key=lambda kv: variant_rank(page, kv[1][0])):
            acc = np.array([r.metric("accuracy") for r in recs])
            gap = np.array([r.group_summary(spec).get("gap", np.nan) for r in recs])
            d_acc = np.array([r.metric("accuracy") - reference[r.seed].metric("accuracy")
                              for r in recs if r.seed in reference])
            d_gap = np.array([r.group_summary(spec).get("gap", np.nan)
                              - reference[r.seed].group_summary(spec).get("gap", np.nan)
                              for r in recs if r.seed in reference])
            rows.append([title, name, ", ".join(str(r.seed) for r in sorted(recs, key=lambda r: r.seed)),
                         ms(acc).lstrip("+"), ms(gap).lstrip("+"),
                         ms(d_acc) if name != ref else "–", ms(d_gap) if name != ref else "–"])
    if not rows:
        return ""
    return "## Across training seeds\n\n" + md_table(
        ["model", "training set", "seeds", "accuracy mean ± sd", f"{spec} gap mean ± sd",
         f"acc. − {ref} (same seed)", f"gap − {ref} (same seed)"], rows)


def fmt_drop(d: float, ci: tuple[float, float] | None) -> str:
    text = f"{d:+.3f}" + (f" [{num(ci[0]):s}, {num(ci[1]):s}]" if ci else "")
    return f"**{text}**" if ci and (ci[0] > 0 or ci[1] < 0) else text


def fmt_under(rob, severity: int = 3) -> str:
    """'0.712 [0.69, 0.73] (4 corruptions)' or '–'."""
    got = rob.mean_under(severity) if rob is not None else None
    if got is None:
        return "–"
    mean, ci, n = got
    return f"{mean:.3f}" + (f" [{num(ci[0])}, {num(ci[1])}]" if ci else "") + f" ({n} corruption{'s' * (n > 1)})"


def section_robustness(page: Page) -> str:
    """The primary metric under each test-image corruption, its drop from clean with the
    paired interval, the mean over corruptions, and the metric against severity."""
    robust = page.table.robust
    if not robust:
        return ""
    metric = page.primary
    values = sorted({v for r in robust for v in r.corrupted if v.endswith(":3")})
    head = ["method", f"clean {metric}"] + [f"{v} (drop [95% CI])" for v in values] + ["mean under corruption"]
    body, collapsed = [], False
    for r in robust:
        row = [row_name_of(r.clean), fmt(r.clean.mean(), 3)]
        for v in values:
            if v in r.corrupted:
                d, ci = r.drop(v)
                one = one_class(r.corrupted[v]) if one_class(r.clean) is None else None
                row.append(f"{fmt(r.corrupted[v].mean(), 3)} ({fmt_drop(d, ci)})"
                           + (f" ¹ all \"{one}\"" if one is not None else ""))
                collapsed = collapsed or one is not None
            else:
                row.append("–")
        row.append(fmt_under(r))
        body.append(row)
    out = ["## Robustness: the test images corrupted\n",
           f"The same fitted models scored again on corrupted copies of the test images (Hendrycks & "
           f"Dietterich 2019's definitions; see `cvbench/corruptions.py`), severity 3 of 5. Each cell: "
           f"{metric} under the corruption and its drop from clean, with the paired bootstrap interval "
           "of the drop (the same test items, resampled alike; bold: the interval excludes 0). Mean "
           "under corruption averages the corruptions of the row.\n", md_table(head, body)]
    if collapsed:
        out.append("¹ The model predicted one class for every test image under this corruption "
                   "(every seed), which it does not on clean images: a collapse, not a graded loss.\n")
    sweeps = [r for r in robust if any(len(r.severities(n)) > 1 for n in r.names)]
    for r in sweeps:
        sevs = sorted({s for n in r.names for s in r.severities(n)})
        rows = [[n] + [fmt(r.severities(n)[s].mean(), 3) if s in r.severities(n) else "–" for s in sevs]
                for n in r.names]
        out.append(f"### {row_name_of(r.clean)}: {metric} at every severity (clean {fmt(r.clean.mean(), 3)})\n")
        out.append(md_table(["corruption", *(f"severity {s}" for s in sevs)], rows))
    path, link = page.figure_path(f"{page.task.name}-robustness.png")
    if robustness_figure(robust, metric, path, f"{page.task.name}: {metric} against corruption severity"):
        out.append(f"![{metric} against severity]({link})\n\nEach line is one method: its clean "
                   f"{metric} at severity 0, then the mean over the corruptions it ran at each severity; "
                   "colours are families.\n")
    return "\n".join(out)


def one_class(config) -> str | None:
    """The class a configuration predicted for every test item in every seed, if it did."""
    preds = {p for rec in config.records for p in rec.y_pred()}
    if len(preds) != 1 or any(not rec.y_pred() for rec in config.records):
        return None
    (p,) = preds
    classes = config.classes
    return str(classes[p]) if isinstance(p, int) and 0 <= p < len(classes) else str(p)


def row_name_of(config) -> str:
    cell = cell_name({k: v for k, v in config.conditions.items() if k != CORRUPTION})
    return config.label + (f" · {cell}" if cell else "")


def _fmt_diff(d: float, samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    text = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def _collapsed(name: str, title: str):
    def section(page: Page) -> str:
        return details(title, SECTIONS[name](page))

    section.__doc__ = f"{title} (collapsed)"
    return section


SECTIONS = {
    "summary": section_summary,
    "picture": section_picture,
    "confusion": section_confusion,
    "per_class": section_per_class,
    "curves": section_curves,
    "stages": section_stages,
    "sweeps": section_sweeps,
    "all_runs": section_all_runs,
    "quick": section_quick,
    "groups": section_groups,
    "robustness": section_robustness,
    "paired": section_paired,
    "seeds": section_seeds,
    "sweeps_details": _collapsed("sweeps", "Sweeps: every point of every swept block"),
    "confusion_details": _collapsed("confusion", "Confusion matrices"),
    "per_class_details": _collapsed("per_class", "Per-class recall"),
    "curves_details": _collapsed("curves", "Learning curves"),
    "stages_details": _collapsed("stages", "Runtime per stage"),
    "all_runs_details": _collapsed("all_runs", "All runs"),
    "groups_details": _collapsed("groups", "Disparity across groups, run by run"),
}
DEFAULT_SECTIONS = ("summary", "picture", "robustness", "sweeps_details", "confusion_details",
                    "per_class_details", "curves_details", "stages_details", "all_runs_details", "quick")
