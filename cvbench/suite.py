"""Suites: `suites/<task>.toml` lists the runs (and sweeps) `cvbench suite <task>` performs.

    task = "fairface"
    description = "..."

    [defaults.cnn]                 # parameters every `cnn` block starts from
    model = "resnet18"
    epochs = 8

    [[run]]
    method = "cnn"
    label = "ResNet-18/4 joint head: biased vs balanced"
    params = { image_size = 64, lr = [1e-3, 3e-3] }          # lists are sweeps
    conditions = { composition = ["biased", "balanced"] }   # the task's protocol conditions
    quick = { epochs = 1 }         # overrides (of params or conditions) applied with --quick
    seeds = [0, 1, 2]              # default [0]
    gpu_only = false               # true: skipped (and said so) when no GPU is in use
    skip_quick = false             # true: not part of --quick

A list value expands into a sweep: the cartesian product across all list-valued keys, of
params and conditions alike. The whole file is checked before anything runs: key names and
types, empty sweeps, unknown methods, parameters and conditions, and every parameter value of
every sweep point (the method's declared limits), so a bad point fails at once, not half-way.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

_BLOCK_KEYS = {"method", "label", "params", "conditions", "quick", "seeds", "gpu_only", "skip_quick"}
_TOP_KEYS = {"task", "description", "defaults", "run"}


@dataclass
class RunSpec:
    """What to run: a method with parameters, conditions and a seed (one sweep point)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    label: str = ""
    sweep: tuple[str, ...] = ()
    block: int = 0
    conditions: dict[str, Any] = field(default_factory=dict)

    def short(self) -> str:
        values = {**self.params, **self.conditions}
        swept = ", ".join(f"{k}={values[k]}" for k in self.sweep if k in values)
        return (self.label or self.method) + (f" [{swept}]" if swept else "") + (
            f" seed={self.seed}" if self.seed else "")


@dataclass
class Block:
    index: int
    method: str
    label: str
    params: dict[str, Any]
    conditions: dict[str, Any]
    quick: dict[str, Any]
    seeds: list[int]
    gpu_only: bool
    skip_quick: bool


@dataclass
class Suite:
    task: str
    path: Path
    blocks: list[Block]
    description: str = ""

    def specs(self, quick: bool = False, only: str | None = None) -> list[RunSpec]:
        """Every block expanded into RunSpecs (sweeps expanded), optionally one method/label."""
        out: list[RunSpec] = []
        for b in self.blocks:
            if only and only not in (b.method, b.label):
                continue
            if quick and b.skip_quick:
                continue
            params, conditions = dict(b.params), dict(b.conditions)
            if quick:
                for k, v in b.quick.items():
                    (conditions if k in b.conditions else params)[k] = v
            names = list(params) + list(conditions)
            merged = {**params, **{k: v for k, v in conditions.items()}}
            for seed in b.seeds:
                for point, swept in expand_sweep(merged):
                    out.append(RunSpec(
                        method=b.method, params={k: point[k] for k in params},
                        conditions={k: point[k] for k in conditions}, seed=seed, label=b.label,
                        sweep=tuple(k for k in names if k in swept), block=b.index))
        return out


def expand_sweep(params: dict[str, Any]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Cartesian product over list-valued keys; returns [(point, names swept over >1 value)]."""
    swept = tuple(k for k, v in params.items() if isinstance(v, list))
    for k in swept:
        if not params[k]:
            raise UserError(f"sweep {k} = [] is empty; give at least one value")
    if not swept:
        return [(dict(params), ())]
    points = []
    for combo in itertools.product(*(params[k] for k in swept)):
        point = dict(params)
        point.update(zip(swept, combo))
        points.append((point, tuple(k for k in swept if len(params[k]) > 1)))
    return points


def _label_ok(label: Any) -> bool:
    return isinstance(label, str) and label.strip() != "" and all(c.isprintable() for c in label)


def load_suite(path: Path, task_name: str | None = None) -> Suite:
    """Parse and check a suite file; every problem is one sentence naming file and block."""
    if not path.exists():
        raise UserError(f"no suite file {path}; expected suites/<task>.toml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the suite as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: malformed TOML: {exc}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown top-level key {unknown[0]!r}; valid keys: {', '.join(sorted(_TOP_KEYS))}")
    task = data.get("task", task_name)
    if task_name and task != task_name:
        raise UserError(f"{path}: says task = {task!r} but was loaded for task {task_name!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
        raise UserError(f"{path}: [defaults] must hold one table per method, e.g. [defaults.cnn]")
    runs = data.get("run", [])
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{path}: expected one or more [[run]] tables")
    blocks = []
    for i, r in enumerate(runs):
        where = f"{path}: [[run]] #{i + 1}"
        unknown = set(r) - _BLOCK_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(_BLOCK_KEYS))}")
        if not isinstance(r.get("method"), str) or not r.get("method"):
            raise UserError(f"{where}: 'method' must be a method name (a string), got {r.get('method')!r}")
        label = r.get("label", r["method"])
        if not _label_ok(label):
            raise UserError(f"{where}: 'label' must be a one-line string, got {label!r}")
        seeds = r.get("seeds", [0])
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise UserError(f"{where}: 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
        for key in ("params", "conditions", "quick"):
            if not isinstance(r.get(key, {}), dict):
                raise UserError(f"{where}: {key!r} must be a table, e.g. {key} = {{ k = 1 }}")
        for key in ("gpu_only", "skip_quick"):
            if not isinstance(r.get(key, False), bool):
                raise UserError(f"{where}: {key!r} must be true or false, got {r[key]!r}")
        params = {**defaults.get(r["method"], {}), **r.get("params", {})}
        for table in (params, r.get("conditions", {}), r.get("quick", {})):
            for k, v in table.items():
                if isinstance(v, list) and not v:
                    raise UserError(f"{where}: {k} = [] is an empty sweep; give at least one value")
        blocks.append(Block(
            index=i, method=r["method"], label=label, params=params,
            conditions=dict(r.get("conditions", {})), quick=dict(r.get("quick", {})), seeds=seeds,
            gpu_only=r.get("gpu_only", False), skip_quick=r.get("skip_quick", False),
        ))
    return Suite(task=task, path=path, blocks=blocks, description=data.get("description", ""))


@dataclass
class SuiteReport:
    task: str
    done: int = 0
    resumed: int = 0
    skipped_gpu: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0


def run_suite(task_name: str, options, only: str | None = None, path: Path | None = None,
              log=print, dry_run: bool = False) -> SuiteReport:
    """Plan every run of a task's suite (checked before anything runs), then execute the
    runs that have no record yet (resume)."""
    from .run import execute, plan_runs
    from .tasks import get_task

    task = get_task(task_name)
    suite = load_suite(path or task.suite_path(), task.name)
    specs = suite.specs(quick=options.quick, only=only)
    if only and not specs:
        names = sorted({b.method for b in suite.blocks} | {b.label for b in suite.blocks})
        raise UserError(f"suite {suite.path.name} has no run {only!r}; it has: {', '.join(names)}")
    gpu_blocks = {b.index for b in suite.blocks if b.gpu_only}
    plan = plan_runs(task, specs, options, gpu_blocks=gpu_blocks, log=log)
    report = SuiteReport(task=task.name, skipped_gpu=len(plan.skipped_gpu))
    if dry_run:
        for group in plan.groups:
            for run in group.runs:
                report.resumed += run.recorded
                log(f"  {'recorded' if run.recorded else 'to run  '}  {run.spec.short()}")
        return report
    return execute(plan, options, report, log=log)
