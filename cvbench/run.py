"""Run one method on one task: fit on train, score test, compute metrics, build the record."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from . import env
from .methods import create_method, full_params, key_params
from .results import append_record, completed_keys, run_key
from .split import Split, drop_unreadable, per_class_limit
from .tasks import Task, get_task


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


@dataclass
class RunSpec:
    """What to run: a method with parameters and a seed (one point of a suite's sweep)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    label: str = ""
    sweep: tuple[str, ...] = ()
    block: int = 0


def load_task_splits(task: Task, options: RunOptions, seed: int = 0) -> tuple[Split, Split]:
    """The task's (train, test); with quick, a seeded per-class subset of each."""
    train, test = task.load_splits(options.data_dir, seed=0, skip_bad=options.skip_bad)
    if options.skip_bad:
        train, test = drop_unreadable(train), drop_unreadable(test)
    if options.quick:
        ntr, nte = task.quick_limit
        train = per_class_limit(train, ntr, seed=seed, name=train.name)
        test = per_class_limit(test, nte, seed=seed, name=test.name)
    return train, test


def build_method(spec: RunSpec, options: RunOptions):
    """Create the method and fill in the runtime parameters it declares (seed, device, n_jobs)."""
    method = create_method(spec.method, **spec.params)
    declared = method.get_params(deep=False)
    runtime = {}
    if "seed" in declared and "seed" not in spec.params:
        runtime["seed"] = spec.seed
    if "device" in declared and "device" not in spec.params:
        runtime["device"] = env.resolve_device(options.device)
    if "n_jobs" in declared and "n_jobs" not in spec.params and options.n_jobs is not None:
        runtime["n_jobs"] = options.n_jobs
    if runtime:
        method.set_params(**runtime)
    return method


def record_key(task: Task, train: Split, test: Split, spec: RunSpec, method, quick: bool) -> str:
    return run_key(task.name, [train.fingerprint, test.fingerprint], spec.method,
                   key_params(method), spec.seed, quick)


def run_one(task: Task | str, spec: RunSpec, options: RunOptions | None = None,
            splits: tuple[Split, Split] | None = None) -> dict[str, Any] | None:
    """Fit, predict and evaluate one run; append its record unless options.save is False.

    Returns the record, or None when a record with the same key exists and not options.force.
    """
    from .metrics import evaluate

    options = options or RunOptions()
    task = get_task(task) if isinstance(task, str) else task
    train, test = splits or load_task_splits(task, options, seed=spec.seed)
    method = build_method(spec, options)
    key = record_key(task, train, test, spec, method, options.quick)
    if options.save and not options.force and key in completed_keys(task.name):
        return None

    device = env.resolve_device(options.device)
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    load_before = env.load_average()
    with threadpool_limits(limits=options.blas_threads):
        t0 = time.perf_counter()
        method.fit(train)
        t1 = time.perf_counter()
        scores = np.asarray(method.predict_scores(test), dtype=np.float64)
        t2 = time.perf_counter()
    if scores.shape != (len(test), test.n_classes):
        raise RuntimeError(
            f"{spec.method}.predict_scores returned shape {scores.shape}, expected {(len(test), test.n_classes)}"
        )
    metrics = evaluate(test.labels, scores, test.classes, extras=task.metrics, groups=test.groups,
                       seed=spec.seed)
    aux = getattr(method, "aux_scores_", None) or {}
    if aux:
        metrics["aux"] = _aux_metrics(aux, test)

    info = method.run_info
    record = {
        "key": key,
        "task": task.name,
        "method": spec.method,
        "family": getattr(method, "family", "classical"),
        "params": full_params(method),
        "seed": spec.seed,
        "label": spec.label or spec.method,
        "block": spec.block,
        "sweep": list(spec.sweep),
        "quick": options.quick,
        "data": {
            "variant": test.meta.get("variant") or train.meta.get("variant") or task.name,
            "train": train.describe(),
            "test": test.describe(),
            "bad_images_skipped": int(train.meta.get("bad_images", 0)) + int(test.meta.get("bad_images", 0)),
        },
        "metrics": metrics,
        "predictions": _predictions(task, test, scores),
        "timings": {
            "fit_s": round(t1 - t0, 4),
            "predict_s": round(t2 - t1, 4),
            "total_s": round(t2 - t0, 4),
            "per_image_ms": round(1000 * (t2 - t1) / max(1, len(test)), 4),
            "load_avg": [load_before, env.load_average()],
            **{k: v for k, v in (info.pop("timings", {}) or {}).items()},
        },
        "info": info,
        "budget": info.get("budget") or {},
        "device": env.device_info(device) if family_uses_device(method) else env.device_info("cpu"),
        "versions": env.versions(),
        "git": env.git_revision(),
        "started": started,
    }
    if options.save and env.is_main_process():
        append_record(record)
    return record


def _predictions(task: Task, test: Split, scores: np.ndarray) -> dict[str, Any]:
    """Per-item truth and prediction (and the group keys the task's metrics use), so pages can
    bootstrap differences between runs from records alone."""
    out: dict[str, Any] = {"y_true": test.labels.tolist(), "y_pred": scores.argmax(1).tolist()}
    keys = sorted({k for spec in task.metrics if spec.startswith("groups:")
                   for k in spec.split(":", 1)[1].split("*")})
    if keys:
        out["groups"] = {k: [str(v) for v in test.groups[k]] for k in keys if k in test.groups}
    if "map5" in task.metrics:
        k = min(5, scores.shape[1])
        out["top5"] = np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()
    return out


def family_uses_device(method) -> bool:
    return "device" in method.get_params(deep=False)


def _aux_metrics(aux: dict[str, np.ndarray], test: Split) -> dict[str, Any]:
    """Accuracy of auxiliary heads (e.g. gender, age) against test.groups of the same name."""
    out: dict[str, Any] = {}
    for name, scores in aux.items():
        if name not in test.groups:
            continue
        truth = np.asarray(test.groups[name])
        names = test.meta.get(f"{name}_classes")
        pred = np.asarray(scores).argmax(1)
        if names is not None:
            lookup = {str(n): i for i, n in enumerate(names)}
            truth_idx = np.array([lookup.get(str(t), -1) for t in truth])
        else:
            truth_idx = truth.astype(np.int64)
        valid = truth_idx >= 0
        out[name] = {"accuracy": float((pred[valid] == truth_idx[valid]).mean()) if valid.any() else 0.0,
                     "n": int(valid.sum())}
    return out
