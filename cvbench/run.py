"""Execute a plan (`cvbench.plan`): fit each group of runs once, predict under every test
condition, evaluate and append one record per run. Nothing here builds, validates or keys a
method: the plan did that once per run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from . import cache, env, progress
from .atomic import atomic_write_text
from .conditions import apply_test, apply_train, split_conditions
from .derived import with_augmented_copy
from .errors import UserError
from .methods import Method, Scores, full_params, method_facts
from .paths import cache_dir
from .plan import (
    FitGroup,
    Plan,
    PlannedRun,
    RunOptions,
    RunSpec,
    check_specs,
    plan_runs,
    split_seed,
    training_split,
    validation_carve,
)
from .results import RunRecord, append_record, results_path
from .split import Split
from .tasks import Task, get_task

DEFAULT_FRACTION = 0.2  # the validation carve of `cvbench tune` and of select = "validation"

SCORE_CLASSES_IN_FULL = 10  # up to this many classes a record keeps every score; else the top 5


@dataclass
class SuiteReport:
    task: str
    done: int = 0
    resumed: int = 0
    skipped_gpu: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0


def execute(plan: Plan, options: RunOptions, report: SuiteReport | None = None, log=print,
            on_record: Callable[[RunRecord], None] | None = None) -> SuiteReport:
    """Fit each group with pending runs once, predict under each test condition, record.
    `on_record(record)` is called for every record (the CLI prints it)."""
    report = report or SuiteReport(task=plan.task.name)
    t0 = time.perf_counter()
    todo = [g for g in plan.groups if options.force or g.pending]
    report.resumed += sum(len(g.runs) for g in plan.groups if g not in todo)
    with progress.enabled_as(None if options.progress else False):  # every stage's bar
        return _execute(plan, options, report, todo, t0, log, on_record)


def _execute(plan, options, report, todo, t0, log, on_record) -> SuiteReport:
    bar = progress.bar(sum(len(g.runs) for g in todo), plan.task.name, unit="run", leave=True)
    for group in todo:
        runs = group.runs if options.force else group.pending
        if not options.force:
            report.resumed += len(group.runs) - len(runs)
        bar.set_postfix_str(runs[0].spec.short(), refresh=False)
        try:
            for record in run_group(plan, group, runs, options):
                report.done += 1
                bar.update(1)
                if on_record is not None:
                    with bar.external_write_mode():  # the line above the bar, not through it
                        on_record(record)
                else:
                    primary = record.metric(plan.task.primary)
                    bar.write(f"  {record.label} {_point(record)}: {plan.task.primary} "
                              f"{primary if primary is not None else float('nan'):.4f} "
                              f"({record.run_seconds:.1f} s{skipped_note(record)})")
        except UserError:
            raise
        except Exception as exc:  # one broken run must not lose a long suite
            for run in runs:
                report.failed.append((run.spec.short(), f"{type(exc).__name__}: {exc}"))
            with bar.external_write_mode():
                log(f"run failed: {runs[0].spec.short()}: {type(exc).__name__}: {exc}")
                log("".join(traceback.format_exception(exc, limit=-3)))
            bar.update(len(runs))
    bar.close()
    report.wall_s = time.perf_counter() - t0
    return report


def skipped_note(record: RunRecord) -> str:
    """", N bad images skipped" when --skip-bad left images out of the run, else ""."""
    n = int(record.data.get("bad_images_skipped", 0) or 0)
    return f", {n} bad image{'s' if n != 1 else ''} skipped" if n else ""


def _point(record: RunRecord) -> str:
    values = {**record.params, **record.conditions}
    swept = ", ".join(f"{k}={values.get(k)}" for k in record.sweep)
    return f"[{swept}]" if swept else ""


def fit_split(task: Task, group: FitGroup) -> tuple[Split, dict[str, Any] | None]:
    """The group's training split under its batch-stage conditions, and what the record says
    of the augmentation: a method that does not augment batches itself (the deep engine does)
    gets the split plus one augmented copy of every image."""
    method = group.method
    task_train = apply_train(group.train, group.train_conditions, task.conditions, group.seed,
                             stages=("train_batches",))
    if task_train.augment is None:
        return task_train, None
    aug = task_train.augment
    how = (f"per batch, each image with probability {aug.p}" if method.batch_augment
           else "the training split plus one augmented copy of every image")
    if not method.batch_augment:
        task_train = with_augmented_copy(task_train, seed=10_000 + group.seed)
    return task_train, {"name": aug.name, "how": how, **aug.facts}


def run_group(plan: Plan, group: FitGroup, runs: list[PlannedRun], options: RunOptions
              ) -> list[RunRecord]:
    """Fit once under the group's training conditions; one record per run (test condition)."""
    task = plan.task
    known = task.conditions
    method = group.method
    base_train, base_test = plan.data(group.seed)
    train, augment = fit_split(task, group)
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    load_before = env.load_average()
    with threadpool_limits(limits=options.blas_threads), cache.usage() as fit_cache:
        t0 = time.perf_counter()
        method.fit(train)
        fit_s = time.perf_counter() - t0
    fit_info = method.run_info
    records = []
    for i, run in enumerate(runs):
        _, test_cond = split_conditions(run.spec.conditions, known)
        test = apply_test(base_test, test_cond, known, run.spec.seed)
        with threadpool_limits(limits=options.blas_threads), cache.usage() as predict_cache:
            t1 = time.perf_counter()
            out = Scores.of(method.predict_scores(test))
            predict_s = time.perf_counter() - t1
        record = _record(task, (base_train, base_test), run, method, train, test, out, fit_info,
                         fit_s, predict_s, started, load_before, options, plan.device, fit_reused=i > 0)
        record.info["cache"] = {"fit": fit_cache.counts, "predict": predict_cache.counts}
        if run.selection:
            record.info["selection"] = run.selection
        if augment:
            record.data["train_augment"] = augment
        if options.save and env.is_main_process():
            save_record(record, options.root)
        records.append(record)
    return records


def save_record(record: RunRecord, root) -> None:
    """Append the record; if that fails after the work is done (a full disk, a folder made
    read-only meanwhile), keep the record in a recovery file and say which (UserError)."""
    try:
        append_record(record, root)
    except OSError as exc:
        target = results_path(record.task, root)
        why = (exc.strerror or type(exc).__name__).lower()
        line = record.to_json() + "\n"
        for folder in _recovery_folders():
            rescue = folder / f"cvbench-recovered-{record.task}-{record.key}.jsonl"
            try:
                atomic_write_text(rescue, line)
            except OSError:
                continue
            raise UserError(f"could not append the record of {record.label} to {target} ({why}); "
                            f"it is saved in {rescue}: once {target.parent} can be written, "
                            f"append it with `cat {rescue} >> {target}`") from None
        raise UserError(f"could not append the record of {record.label} to {target} ({why}), "
                        f"nor save it in a recovery file; the record: {line}") from None


def _recovery_folders() -> list[Path]:
    """Where a record that could not be appended is kept: the cache, else the temp folder."""
    folders = [Path(tempfile.gettempdir())]
    try:
        folders.insert(0, cache_dir("recovered"))
    except OSError:
        pass
    return folders


def _record(task: Task, base: tuple[Split, Split], run: PlannedRun, method: Method, train: Split,
            test: Split, out: Scores, fit_info: dict, fit_s: float, predict_s: float, started: str,
            load_before, options: RunOptions, device: str, fit_reused: bool) -> RunRecord:
    from .metrics import evaluate

    spec = run.spec
    scores = np.asarray(out.main, dtype=np.float64)
    if scores.shape != (len(test), test.n_classes):
        raise RuntimeError(f"{spec.method}.predict_scores returned shape {scores.shape}, "
                           f"expected {(len(test), test.n_classes)}")
    metrics = evaluate(test.labels, scores, test.classes, metrics=task.metrics, groups=test.groups,
                       seed=spec.seed, group_key=task.val_group_key)
    if out.aux:
        metrics["aux"] = _aux_metrics(out.aux, test)
    info = dict(fit_info)
    for k, v in out.info.items():  # test-side facts; dicts merge into the fit's
        info[k] = {**info[k], **v} if isinstance(v, dict) and isinstance(info.get(k), dict) else v
    timings = {"fit_s": round(fit_s, 4), "predict_s": round(predict_s, 4),
               "total_s": round(fit_s + predict_s, 4),
               "per_image_ms": round(1000 * predict_s / max(1, len(test)), 4),
               "load_avg": [load_before, env.load_average()], **(info.pop("timings", {}) or {})}
    if fit_reused:
        info["fit_reused"] = "trained once for every test condition; fit time is the shared fit's"
    data = {
        "variant": test.meta.get("variant") or train.meta.get("variant") or task.name,
        "classes": list(test.classes),
        "train": base[0].describe(),
        "test": base[1].describe(),
        "bad_images_skipped": int(base[0].meta.get("bad_images", 0)) + int(base[1].meta.get("bad_images", 0)),
    }
    if task.split_by_seed:
        data["split_seed"] = split_seed(task, run.spec.seed)
    if train.fingerprint != base[0].fingerprint:
        data["train_used"] = train.describe()
    if test.fingerprint != base[1].fingerprint:
        data["test_used"] = test.describe()
    uses_device = "device" in method.get_params(deep=False)
    return RunRecord(
        key=run.key, task=task.name, method=spec.method, family=getattr(method, "family", "classical"),
        params=full_params(method), seed=spec.seed, label=spec.label or spec.method,
        block=spec.block, sweep=list(spec.sweep), conditions=dict(spec.conditions),
        quick=options.quick, data=data, metrics=metrics,
        predictions=_predictions(task, test, scores), timings=timings, info=info,
        budget=info.get("budget") or {},
        device=env.device_info(device if uses_device else "cpu"),
        versions=env.versions(), git=env.git_revision(), started=started,
        method_facts=method_facts(spec.method, method), command=list(options.command),
    )


def _group_keys(task: Task) -> list[str]:
    keys = {k for m in task.metrics if m.startswith("groups:") for k in m.split(":", 1)[1].split("*")}
    if task.val_group_key:
        keys.add(task.val_group_key)
    return sorted(keys)


def _predictions(task: Task, test: Split, scores: np.ndarray) -> dict[str, Any]:
    """Per item: id, truth, prediction, scores (float16; the top 5 when there are many
    classes) and the group ids the task's metrics resample or stratify by, so intervals,
    paired tests and error analysis need no data at render time."""
    out: dict[str, Any] = {"ids": test.item_ids(), "y_true": test.labels.tolist(),
                           "y_pred": scores.argmax(1).tolist() if len(scores) else []}
    keys = [k for k in _group_keys(task) if k in test.groups]
    if keys:
        out["groups"] = {k: [str(v) for v in test.groups[k]] for k in keys}
    with np.errstate(over="ignore"):  # float16 precision where it fits, float32 beyond
        small = np.abs(scores) < 6e4
        half = np.where(small, scores.astype(np.float16), scores.astype(np.float32)).astype(np.float64)
    if scores.shape[1] <= SCORE_CLASSES_IN_FULL:
        out["scores"] = np.round(half, 4).tolist()
    else:
        k = min(5, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out["top5"] = top.tolist()
        out["top5_scores"] = np.round(np.take_along_axis(half, top, axis=1), 4).tolist()
    return out


def _aux_metrics(aux: dict[str, np.ndarray], test: Split) -> dict[str, Any]:
    """Accuracy of auxiliary heads against the task's extra labels of the same name."""
    out: dict[str, Any] = {}
    for name, scores in aux.items():
        if name not in test.aux_classes:
            continue
        truth = test.aux_labels(name)
        pred = np.asarray(scores).argmax(1)
        valid = truth >= 0
        out[name] = {"accuracy": float((pred[valid] == truth[valid]).mean()) if valid.any() else 0.0,
                     "n": int(valid.sum())}
    return out


def run_one(task: Task | str, spec: RunSpec, options: RunOptions | None = None,
            splits: tuple[Split, Split] | None = None) -> RunRecord:
    """Plan and execute a single run; its record (`splits` replaces the task's data)."""
    options = options or RunOptions()
    plan = plan_runs(task, [spec], options, log=lambda m: None, splits=splits)
    group = plan.groups[0]
    return run_group(plan, group, group.runs, options)[0]


def validation_scores(task: Task, specs: list[RunSpec], fit: Split, val: Split,
                      options: RunOptions, log=print) -> list[RunRecord]:
    """Every spec fitted on `fit` and scored on `val`, through the planner and this runner;
    the records are returned, never saved."""
    options = RunOptions(**{**options.__dict__, "save": False, "force": True, "command": ()})
    plan = plan_runs(task, specs, options, log=lambda m: None, splits=(fit, val))
    records: list[RunRecord] = []
    execute(plan, options, log=log, on_record=records.append)
    return records


def selection_id(task: Task, runs: list[PlannedRun], fraction: float) -> str:
    """Names one validation selection: the candidates (their run keys, which name the data)
    and the carve."""
    blob = json.dumps([task.name, sorted(r.key for r in runs), fraction])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select_on_validation(plan: Plan, blocks, options: RunOptions, log=print, dry_run: bool = False,
                         fraction: float = DEFAULT_FRACTION) -> None:
    """For every block with select = "validation": keep in `plan` only the sweep point with the
    best mean validation score over the block's seeds (per cell of its conditions), scored on
    the task's validation carve of each seed's training split; the chosen runs carry the
    scores of every point (`info.selection` of their records). A selection a stored record
    already made is reused (resume); with dry_run nothing is fitted."""
    from collections import defaultdict

    from .results import load_records

    task = plan.task
    stored: dict[str, dict] = {}
    if not options.force:
        for rec in load_records(task.name, options.root, warn=lambda m: None):
            sel = rec.info.get("selection") or {}
            if sel.get("id"):
                stored.setdefault(sel["id"], sel)
    for block in blocks:
        if block.select != "validation":
            continue
        cells: dict[str, list[PlannedRun]] = defaultdict(list)  # by training-side conditions:
        for g in plan.groups:  # one choice per fit, used under every test condition of the cell
            for r in g.runs:
                if r.spec.block == block.index:
                    train_side, _ = split_conditions(r.spec.conditions, task.conditions)
                    cells[json.dumps(train_side, sort_keys=True, default=str)].append(r)
        for runs in cells.values():
            points = sorted({json.dumps(r.spec.params, sort_keys=True, default=str) for r in runs})
            ident = selection_id(task, runs, fraction)
            if ident in stored:
                chosen = stored[ident]["chosen_params"]
                sel = stored[ident]
            elif dry_run:
                log(f"  select    {runs[0].spec.label}: {len(points)} point(s), chosen on validation when run")
                continue
            else:
                sel = _select(plan, runs, points, options, log, fraction)
                sel["id"] = ident
                chosen = sel["chosen_params"]
            keep = {id(r) for r in runs if json.dumps(r.spec.params, sort_keys=True, default=str) == chosen}
            for g in plan.groups:
                g.runs = [r for r in g.runs if r not in runs or id(r) in keep]
                for r in g.runs:
                    if id(r) in keep:
                        r.selection = {**sel, "score": sel["scores_by_seed"][str(r.spec.seed)]}
            plan.groups = [g for g in plan.groups if g.runs]


def _select(plan: Plan, runs: list[PlannedRun], points: list[str], options: RunOptions, log,
            fraction: float) -> dict[str, Any]:
    task = plan.task
    metric = task.primary
    scores: dict[str, dict[int, float]] = {p: {} for p in points}
    for seed in sorted({r.spec.seed for r in runs}):
        specs = {}  # each point once, on clean validation images (no test-side condition)
        for r in runs:
            if r.spec.seed == seed:
                train_side, _ = split_conditions(r.spec.conditions, task.conditions)
                specs.setdefault(json.dumps(r.spec.params, sort_keys=True, default=str),
                                 replace(r.spec, conditions=train_side))
        specs = list(specs.values())
        fit, val = validation_carve(task, training_split(task, options, seed), fraction, seed)
        log(f"  {specs[0].label}: choosing among {len(points)} point(s) on the validation carve "
            f"(seed {seed}: {len(fit)} fit / {len(val)} val)")
        for rec in validation_scores(task, specs, fit, val, options, log=log):
            point = json.dumps({k: rec.params[k] for k in specs[0].params}, sort_keys=True, default=str)
            value = rec.metric(metric)
            scores[point][seed] = float(value) if value is not None else float("-inf")
    mean = {p: float(np.mean(list(v.values()))) for p, v in scores.items()}
    chosen = max(points, key=lambda p: (mean[p], -points.index(p)))
    seeds = sorted({r.spec.seed for r in runs})
    carve = (f"{round(100 * fraction)}% of train" + (f", by {task.val_group_key}" if task.val_group_key else "")
             + f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
    return {"metric": metric, "carve": carve, "fraction": fraction, "chosen_params": chosen,
            "points": [{"params": json.loads(p), "scores": {str(s): round(v, 6) for s, v in scores[p].items()},
                        "mean": round(mean[p], 6)} for p in points],
            "scores_by_seed": {str(s): round(v, 6) for s, v in scores[chosen].items()}}


def run_suite(task_name: str, options: RunOptions, only: str | None = None, path=None,
              log=print, dry_run: bool = False, on_record=None) -> SuiteReport:
    """Plan every run of a task's suite (checked before anything runs), choose the points of
    select = "validation" blocks on the validation carve, then execute the runs that have no
    record yet (resume); with dry_run, list them and run nothing."""
    from .suite import load_suite

    task = get_task(task_name)
    suite = load_suite(path or task.suite_path(), task.name)
    specs = suite.specs(quick=options.quick, only=only)
    if only and not specs:
        names = sorted({b.method for b in suite.blocks} | {b.label for b in suite.blocks})
        raise UserError(f"suite {suite.path.name} has no run {only!r}; it has: {', '.join(names)}")
    check_specs(task, suite.specs(quick=not options.quick, only=only))  # the other mode too
    plan = plan_runs(task, specs, replace(options, save=False) if dry_run else options,
                     gpu_blocks=suite.gpu_blocks, log=log)
    planned = len(plan.runs)
    select_on_validation(plan, suite.blocks, options, log=log, dry_run=dry_run)
    if len(plan.runs) < planned:
        log(f"{task.name}: {len(plan.runs)} run(s) after the validation selections "
            f"({planned - len(plan.runs)} of points not chosen are not run on the test split)")
    report = SuiteReport(task=task.name, skipped_gpu=len(plan.skipped_gpu))
    if dry_run:
        for group in plan.groups:
            for run in group.runs:
                report.resumed += run.recorded
                log(f"  {'recorded' if run.recorded else 'to run  '}  {run.spec.short()}")
        return report
    return execute(plan, options, report, log=log, on_record=on_record)


__all__ = ["RunOptions", "RunSpec", "SuiteReport", "execute", "plan_runs", "run_group", "run_one",
           "run_suite"]
