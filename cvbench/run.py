"""Plan and execute runs: one pass per run.

`plan_runs` reads the task's splits once, builds and checks every run (parameters against the
method's declaration, conditions against the task's), computes its run key and whether it is
already recorded, and groups runs that share one fit (same method, parameters, seed and
training-side conditions; they differ only in test-side conditions). `execute` fits once per
group, predicts under every test condition, evaluates and appends one record per run.
Nothing is built or keyed twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from . import env
from .conditions import apply_test, apply_train, split_conditions
from .errors import UserError
from .methods import (
    RUNTIME_PARAMS,
    Method,
    Scores,
    create_method,
    full_params,
    key_params,
    method_facts,
)
from .results import RunRecord, append_record, completed_keys, run_key
from .split import Split, drop_unreadable, per_class_limit
from .suite import RunSpec, SuiteReport
from .tasks import Task, get_task

SCORE_CLASSES_IN_FULL = 10  # up to this many classes a record keeps every score; else the top 5


@dataclass
class RunOptions:
    """How to run (not what): none of these enter the run key except `quick`."""

    data_dir: str | None = None
    device: str = "auto"
    n_jobs: int | None = None
    quick: bool = False
    skip_bad: bool = False
    force: bool = False
    save: bool = True
    progress: bool = True
    blas_threads: int | None = None
    leaderboard: str | None = None  # write records here instead of the committed leaderboard


@dataclass
class PlannedRun:
    spec: RunSpec
    key: str
    recorded: bool


@dataclass
class FitGroup:
    """Runs that share one fit: the same method, parameters, seed and training conditions."""

    method: str
    params: dict[str, Any]
    seed: int
    train_conditions: dict[str, Any]
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def pending(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.recorded]


@dataclass
class Plan:
    task: Task
    splits: dict[int, tuple[Split, Split]]  # by split seed (0 unless the task splits by seed)
    device: str
    groups: list[FitGroup]
    skipped_gpu: list[RunSpec] = field(default_factory=list)

    @property
    def runs(self) -> list[PlannedRun]:
        return [r for g in self.groups for r in g.runs]

    def data(self, seed: int) -> tuple[Split, Split]:
        """(train, test) a run with this seed uses."""
        return self.splits[split_seed(self.task, seed)]

    @property
    def train(self) -> Split:
        return next(iter(self.splits.values()))[0]

    @property
    def test(self) -> Split:
        return next(iter(self.splits.values()))[1]


def split_seed(task: Task, seed: int) -> int:
    """The seed of the train/test split a run uses: its own seed when the task draws the
    split (hotelid's per-hotel hold-out: several seeds = several hold-out splits), else 0."""
    return seed if task.split_by_seed else 0


def load_task_splits(task: Task, options: RunOptions, seed: int = 0) -> tuple[Split, Split]:
    """The task's (train, test) (drawn with `seed` where the task's split is drawn); with
    quick, a per-class subset of each."""
    train, test = task.load_splits(options.data_dir, seed=split_seed(task, seed), skip_bad=options.skip_bad)
    if options.skip_bad:
        train, test = drop_unreadable(train), drop_unreadable(test)
    if options.quick:
        ntr, nte = task.quick_limit
        train = per_class_limit(train, ntr, seed=seed, name=train.name)
        test = per_class_limit(test, nte, seed=seed, name=test.name)
    return train, test


def build_method(spec: RunSpec, device: str, n_jobs: int | None) -> Method:
    """Create the method and fill in the runtime parameters it declares (seed, device, n_jobs)."""
    method = create_method(spec.method, **spec.params)
    declared = method.get_params(deep=False)
    runtime = {}
    if "seed" in declared and "seed" not in spec.params:
        runtime["seed"] = spec.seed
    if "device" in declared and "device" not in spec.params:
        runtime["device"] = device
    if "n_jobs" in declared and "n_jobs" not in spec.params and n_jobs is not None:
        runtime["n_jobs"] = n_jobs
    if runtime:
        method.set_params(**runtime)
    return method


def _check_conditions(task: Task, spec: RunSpec) -> None:
    known = task.conditions
    for name, value in spec.conditions.items():
        if name not in known:
            valid = ", ".join(sorted(known)) or "none"
            raise UserError(f"task {task.name!r} has no condition {name!r}; its conditions: {valid}")
        known[name].validate(value, task.name)


def plan_runs(task: Task | str, specs: list[RunSpec], options: RunOptions,
              gpu_blocks: set[int] = frozenset(), log=print,
              splits: tuple[Split, Split] | None = None) -> Plan:
    """Check and key every spec (see the module docstring); GPU-only blocks are dropped, and
    said so, when the device is the CPU. `splits` replaces the task's (train, test) (tests,
    notebooks)."""
    task = get_task(task) if isinstance(task, str) else task
    if options.n_jobs is not None and options.n_jobs < 1:
        raise UserError(f"--jobs must be a positive number of processes, got {options.n_jobs}")
    device = env.resolve_device(options.device)
    skipped = [s for s in specs if s.block in gpu_blocks] if device == "cpu" else []
    if skipped:
        labels = sorted({s.label for s in skipped})
        log(f"skipping {len(skipped)} GPU-protocol run(s) on the CPU: {'; '.join(labels)} "
            f"(run with --device cuda on a GPU machine)")
    specs = [s for s in specs if s not in skipped]
    data: dict[int, tuple[Split, Split]] = {}
    for s in sorted({split_seed(task, spec.seed) for spec in specs} or {0}):
        data[s] = splits or load_task_splits(task, options, seed=s)
    done = set() if options.force else completed_keys(task.name, _root(options))
    groups: dict[str, FitGroup] = {}
    for spec in specs:
        train, test = data[split_seed(task, spec.seed)]
        _check_conditions(task, spec)
        method = build_method(spec, device, options.n_jobs)
        method.validate({"n_train": len(train)})
        kp = key_params(method)
        key = run_key(task.name, [train.fingerprint, test.fingerprint], spec.method, kp, spec.seed,
                      options.quick, spec.conditions or None)
        train_cond, _ = split_conditions(spec.conditions, task.conditions)
        fit_id = json.dumps([spec.method, kp, spec.seed, train_cond], sort_keys=True, default=str)
        group = groups.setdefault(fit_id, FitGroup(spec.method, spec.params, spec.seed, train_cond))
        if not any(r.key == key for r in group.runs):
            group.runs.append(PlannedRun(spec, key, key in done))
    train, test = next(iter(data.values()))
    more = f" (x{len(data)} seeded splits)" if len(data) > 1 else ""
    log(f"{task.name}: train {len(train)} / test {len(test)} images{more} "
        f"({test.meta.get('variant', '')}){' [quick]' if options.quick else ''}; "
        f"{sum(len(g.runs) for g in groups.values())} run(s) on {device}")
    return Plan(task, data, device, list(groups.values()), skipped)


def _root(options: RunOptions):
    from pathlib import Path

    return Path(options.leaderboard) if options.leaderboard else None


def execute(plan: Plan, options: RunOptions, report: SuiteReport | None = None, log=print
            ) -> SuiteReport:
    """Fit each group with pending runs once, predict under each test condition, record."""
    from tqdm.auto import tqdm

    report = report or SuiteReport(task=plan.task.name)
    t0 = time.perf_counter()
    todo = [g for g in plan.groups if options.force or g.pending]
    report.resumed += sum(len(g.runs) for g in plan.groups if g not in todo)
    bar = tqdm(total=sum(len(g.runs) for g in todo), desc=f"suite {plan.task.name}", unit="run",
               disable=not options.progress)
    for group in todo:
        runs = group.runs if options.force else group.pending
        if not options.force:
            report.resumed += len(group.runs) - len(runs)
        bar.set_postfix_str(runs[0].spec.short(), refresh=False)
        try:
            for record in run_group(plan, group, runs, options):
                report.done += 1
                bar.update(1)
                primary = record.metric(plan.task.primary)
                bar.write(f"  {record.label} {_point(record)}: {plan.task.primary} "
                          f"{primary if primary is not None else float('nan'):.4f} "
                          f"({record.run_seconds:.1f} s)")
        except UserError:
            raise
        except Exception as exc:  # one broken run must not lose a long suite
            for run in runs:
                report.failed.append((run.spec.short(), f"{type(exc).__name__}: {exc}"))
            log(f"run failed: {runs[0].spec.short()}: {type(exc).__name__}: {exc}")
            log("".join(traceback.format_exception(exc, limit=-3)))
            bar.update(len(runs))
    bar.close()
    report.wall_s = time.perf_counter() - t0
    return report


def _point(record: RunRecord) -> str:
    values = {**record.params, **record.conditions}
    swept = ", ".join(f"{k}={values.get(k)}" for k in record.sweep)
    return f"[{swept}]" if swept else ""


def run_group(plan: Plan, group: FitGroup, runs: list[PlannedRun], options: RunOptions
              ) -> list[RunRecord]:
    """Fit once under the group's training conditions; one record per run (test condition)."""
    from .pixels import with_augmented_copy

    task = plan.task
    known = task.conditions
    first = runs[0].spec
    method = build_method(first, plan.device, options.n_jobs)
    base_train, base_test = plan.data(group.seed)
    train = apply_train(base_train, group.train_conditions, known, group.seed)
    augment = None
    if train.augment is not None:
        aug = train.augment
        how = (f"per batch, each image with probability {aug.p}" if method.batch_augment
               else "the training split plus one augmented copy of every image")
        augment = {"name": aug.name, "how": how, **aug.facts}
        if not method.batch_augment:
            train = with_augmented_copy(train, seed=10_000 + group.seed)
    method.validate({"n_train": len(train)})
    task.module("protocol")  # task-only metrics register there
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    load_before = env.load_average()
    with threadpool_limits(limits=options.blas_threads):
        t0 = time.perf_counter()
        method.fit(train)
        fit_s = time.perf_counter() - t0
    fit_info = method.run_info
    records = []
    for i, run in enumerate(runs):
        _, test_cond = split_conditions(run.spec.conditions, known)
        test = apply_test(base_test, test_cond, known, run.spec.seed)
        with threadpool_limits(limits=options.blas_threads):
            t1 = time.perf_counter()
            out = Scores.of(method.predict_scores(test))
            predict_s = time.perf_counter() - t1
        record = _record(task, (base_train, base_test), run, method, train, test, out, fit_info,
                         fit_s, predict_s, started, load_before, options, plan.device, fit_reused=i > 0)
        if augment:
            record.data["train_augment"] = augment
        if options.save and env.is_main_process():
            append_record(record, _root(options))
        records.append(record)
    return records


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
                       seed=spec.seed)
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
        method_facts=method_facts(spec.method, method),
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


__all__ = ["RUNTIME_PARAMS", "RunOptions", "RunSpec", "plan_runs", "execute", "run_one"]
