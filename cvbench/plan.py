"""Planning: one expansion of blocks into runs, each run built, validated and keyed once.

A `Block` is what a suite's `[[run]]` table, `cvbench run` and `cvbench eval` all describe: a
method with parameters, task conditions (a list value is a sweep), seeds and `--quick`
overrides. `expand` turns blocks into `RunSpec`s (the cartesian product over list-valued keys,
of parameters and conditions alike); it is the only expansion in cvbench.

`plan_runs` reads the task's splits once, builds every run's method, checks it (parameters
against the method's declaration, conditions against the task's), computes its run key and
whether it is already recorded, and groups the runs that share one fit (same method,
parameters, seed and training-side conditions; they differ only in test-side conditions).
Each group keeps the method built for its first run and the training split its training-side
conditions drew, so execution (`cvbench.run`) builds and validates nothing again.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import env
from .conditions import apply_train, split_conditions
from .errors import UserError
from .methods import Method, create_method, key_params
from .paths import leaderboard_dir
from .results import completed_keys, run_key
from .split import Split, carve_validation, drop_unreadable, per_class_limit
from .tasks import Task, get_task

SELECT_MODES = ("test", "validation")


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
    """A method with parameters and conditions (list values sweep), seeds and --quick
    overrides: a suite's [[run]] table, or the command line of `cvbench run` / `eval`."""

    method: str
    label: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    gpu_only: bool = False
    skip_quick: bool = False
    index: int = 0
    select: str = "test"

    def specs(self, quick: bool = False) -> list[RunSpec]:
        """This block's runs: every seed times every sweep point (the quick overrides first)."""
        params, conditions = dict(self.params), dict(self.conditions)
        if quick:
            for k, v in self.quick.items():
                (conditions if k in self.conditions else params)[k] = v
        names = list(params) + list(conditions)
        out = []
        for seed in self.seeds:
            for point, swept in expand_sweep({**params, **conditions}):
                out.append(RunSpec(
                    method=self.method, params={k: point[k] for k in params},
                    conditions={k: point[k] for k in conditions}, seed=seed,
                    label=self.label or self.method, block=self.index,
                    sweep=tuple(k for k in names if k in swept)))
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


def expand(blocks: list[Block], quick: bool = False, only: str | None = None) -> list[RunSpec]:
    """Every block's runs (`Block.specs`), optionally only one method or label; --quick leaves
    out the blocks marked skip_quick."""
    out: list[RunSpec] = []
    for b in blocks:
        if only and only not in (b.method, b.label):
            continue
        if quick and b.skip_quick:
            continue
        out.extend(b.specs(quick))
    return out


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
    command: tuple[str, ...] = ()  # the command line a record stores (how it was asked for)

    @property
    def root(self) -> Path | None:
        return Path(self.leaderboard) if self.leaderboard else None


@dataclass
class PlannedRun:
    spec: RunSpec
    key: str
    recorded: bool
    selection: dict[str, Any] | None = None  # how a select = "validation" block chose it


@dataclass
class FitGroup:
    """Runs that share one fit: the same method, parameters, seed and training conditions.
    `method` is the method built (and validated) for the first run; `train` the training
    split under the group's train-stage conditions (batch augmentation comes at fit time)."""

    method_name: str
    params: dict[str, Any]
    seed: int
    train_conditions: dict[str, Any]
    method: Method
    train: Split
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


def check_conditions(task: Task, conditions: dict[str, Any]) -> None:
    """Every condition is the task's, with a value it accepts (UserError otherwise)."""
    known = task.conditions
    for name, value in conditions.items():
        if name not in known:
            valid = ", ".join(sorted(known)) or "none"
            raise UserError(f"task {task.name!r} has no condition {name!r}; its conditions: {valid}")
        known[name].validate(value, task.name)


MAX_JOBS = 256  # the most worker processes --jobs asks for (-1: every core, as joblib reads it)


def check_seed(seed: Any) -> None:
    """A run's seed is an integer >= 0 (numpy's generators refuse negative seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed {seed!r} is not valid: expected an integer >= 0 (--seed, or a suite's seeds)")


def check_writable_folder(folder: Path, what: str) -> None:
    """`folder` is a folder that exists and takes a new file, or can be created: checked by
    creating (and removing) a file in it or in its nearest existing parent, so a read-only
    mount or missing permission fails here, before any fit, not when the result is written."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise UserError(f"{what} {folder} cannot be created: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {folder} is not a folder: {probe} is a file; give a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".cvbench-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        verb = "is not writable" if probe == folder else f"cannot be created in {probe}"
        raise UserError(f"{what} {folder} {verb} ({(exc.strerror or type(exc).__name__).lower()}); "
                        f"give a folder you can write") from None


def check_specs(task: Task, specs: list[RunSpec]) -> None:
    """What can be checked of runs without data: their conditions, and every parameter of
    their methods against its declaration (limits that need the data, such as k <= n_train,
    are checked when the plan has it)."""
    for spec in specs:
        check_conditions(task, spec.conditions)
        build_method(spec, "cpu", None).validate({})


def check_options(options: RunOptions) -> None:
    """What can be checked of the options before any data is read: --jobs, and that the
    leaderboard folder a saving run writes can be written."""
    jobs = options.n_jobs
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                             or not (jobs == -1 or 1 <= jobs <= MAX_JOBS)):
        raise UserError(f"--jobs must be -1 (every core) or a number of processes from 1 to "
                        f"{MAX_JOBS}, got {jobs!r}")
    if options.save and env.is_main_process():
        check_writable_folder(options.root or leaderboard_dir(), "the leaderboard folder")


def plan_runs(task: Task | str, specs: list[RunSpec], options: RunOptions,
              gpu_blocks: set[int] = frozenset(), log=print,
              splits: tuple[Split, Split] | None = None) -> Plan:
    """Check, build and key every spec once (see the module docstring); GPU-only blocks are
    dropped, and said so, when the device is the CPU. `splits` replaces the task's (train,
    test) (tests, notebooks)."""
    task = get_task(task) if isinstance(task, str) else task
    check_options(options)
    device = env.resolve_device(options.device)
    skipped = [s for s in specs if s.block in gpu_blocks] if device == "cpu" else []
    if skipped:
        labels = sorted({s.label for s in skipped})
        log(f"skipping {len(skipped)} GPU-protocol run(s) on the CPU: {'; '.join(labels)} "
            f"(run with --device cuda on a GPU machine)")
    specs = [s for s in specs if s not in skipped]
    known = task.conditions
    for spec in specs:  # before any data is read
        check_seed(spec.seed)
        check_conditions(task, spec.conditions)
        spec.conditions = {k: v for k, v in spec.conditions.items()  # a neutral value is no condition
                           if known[k].neutral is None or v != known[k].neutral}
    data: dict[int, tuple[Split, Split]] = {}
    for s in sorted({split_seed(task, spec.seed) for spec in specs} or {0}):
        data[s] = splits or load_task_splits(task, options, seed=s)
    done = set() if options.force else completed_keys(task.name, options.root)
    groups: dict[str, FitGroup] = {}
    for spec in specs:
        train, test = data[split_seed(task, spec.seed)]
        method = build_method(spec, device, options.n_jobs)
        kp = key_params(method)
        key = run_key(task.name, [train.fingerprint, test.fingerprint], spec.method, kp, spec.seed,
                      options.quick, spec.conditions or None)
        train_cond, _ = split_conditions(spec.conditions, known)
        fit_id = json.dumps([spec.method, kp, spec.seed, train_cond], sort_keys=True, default=str)
        group = groups.get(fit_id)
        if group is None:
            drawn = apply_train(train, train_cond, known, spec.seed, stages=("train",))
            group = groups[fit_id] = FitGroup(spec.method, spec.params, spec.seed, train_cond,
                                              method, drawn)
        method.validate({"n_train": len(group.train)})
        if not any(r.key == key for r in group.runs):
            group.runs.append(PlannedRun(spec, key, key in done))
    if any("device" in g.method.get_params(deep=False) for g in groups.values()):
        env.check_device(device)
    train, test = next(iter(data.values()))
    more = f" (x{len(data)} seeded splits)" if len(data) > 1 else ""
    log(f"{task.name}: train {len(train)} / test {len(test)} images{more} "
        f"({test.meta.get('variant', '')}){' [quick]' if options.quick else ''}; "
        f"{sum(len(g.runs) for g in groups.values())} run(s) on {device}")
    return Plan(task, data, device, list(groups.values()), skipped)


def validation_carve(task: Task, train: Split, fraction: float = 0.2,
                     seed: int = 0) -> tuple[Split, Split]:
    """(fitting part, validation part) of a training split, with the task's grouping."""
    return carve_validation(train, fraction, seed=seed, group_key=task.val_group_key)


def training_split(task: Task, options: RunOptions, seed: int = 0) -> Split:
    """The task's training split (per-class subset with quick); its test side is not touched."""
    train, _test = task.load_splits(options.data_dir, seed=split_seed(task, seed), skip_bad=options.skip_bad)
    if options.skip_bad:
        train = drop_unreadable(train)
    if options.quick:
        train = per_class_limit(train, task.quick_limit[0], seed=seed, name=train.name)
    return train
