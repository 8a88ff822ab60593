"""Suites: `suites/<task>.toml` lists the runs (and sweeps) `cvbench suite <task>` performs.

    task = "scene15"
    [[run]]
    method = "tiny-knn"
    label = "Tiny image k-NN (study grid)"
    params = { size = 16, k = [1, 2, 3], metric = ["l1", "l2"] }   # lists are sweeps
    quick = { k = [1] }          # overrides applied with --quick
    seeds = [0]                  # default [0]
    gpu_only = false             # true: skipped (and said so) when no GPU is in use

A list value expands into a sweep: the cartesian product across all list-valued keys.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .run import RunSpec

_BLOCK_KEYS = {"method", "label", "params", "quick", "seeds", "seed", "gpu_only", "notes", "quick_only", "skip_quick"}


@dataclass
class Block:
    index: int
    method: str
    label: str
    params: dict[str, Any]
    quick: dict[str, Any]
    seeds: list[int]
    gpu_only: bool
    skip_quick: bool
    notes: str


@dataclass
class Suite:
    task: str
    path: Path
    blocks: list[Block]
    description: str = ""

    def specs(self, quick: bool = False, only: str | None = None) -> list[RunSpec]:
        """Expand every block into RunSpecs (sweeps expanded), optionally only one method."""
        out: list[RunSpec] = []
        for b in self.blocks:
            if only and only not in (b.method, b.label):
                continue
            if quick and b.skip_quick:
                continue
            params = {**b.params, **(b.quick if quick else {})}
            for seed in b.seeds:
                for point, swept in expand_sweep(params):
                    out.append(RunSpec(method=b.method, params=point, seed=seed, label=b.label,
                                       sweep=swept, block=b.index))
        return out


def expand_sweep(params: dict[str, Any]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Cartesian product over list-valued keys; returns [(params, swept_key_names)]."""
    swept = tuple(k for k, v in params.items() if isinstance(v, list))
    if not swept:
        return [(dict(params), ())]
    points = []
    for combo in itertools.product(*(params[k] for k in swept)):
        point = dict(params)
        point.update(zip(swept, combo))
        points.append((point, tuple(k for k in swept if len(params[k]) > 1)))
    return points


def load_suite(path: Path, task_name: str | None = None) -> Suite:
    """Parse a suite file; malformed TOML is reported with file and line."""
    if not path.exists():
        raise UserError(f"no suite file {path}; expected suites/<task>.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: malformed TOML: {exc}") from None
    task = data.get("task", task_name)
    if task_name and task != task_name:
        raise UserError(f"{path}: says task = {task!r} but was loaded for task {task_name!r}")
    runs = data.get("run", [])
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{path}: expected one or more [[run]] tables")
    blocks = []
    for i, r in enumerate(runs):
        where = f"{path}: [[run]] #{i + 1}"
        unknown = set(r) - _BLOCK_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(_BLOCK_KEYS))}")
        if "method" not in r:
            raise UserError(f"{where}: missing 'method'")
        seeds = r.get("seeds", [r.get("seed", 0)])
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise UserError(f"{where}: 'seeds' must be a list of integers")
        for key in ("params", "quick"):
            if not isinstance(r.get(key, {}), dict):
                raise UserError(f"{where}: {key!r} must be a table, e.g. {key} = {{ k = 1 }}")
        blocks.append(Block(
            index=i, method=r["method"], label=r.get("label", r["method"]),
            params=dict(r.get("params", {})), quick=dict(r.get("quick", {})), seeds=seeds,
            gpu_only=bool(r.get("gpu_only", False)), skip_quick=bool(r.get("skip_quick", False)),
            notes=r.get("notes", ""),
        ))
    return Suite(task=task, path=path, blocks=blocks, description=data.get("description", ""))


@dataclass
class SuiteReport:
    task: str
    done: int = 0
    resumed: int = 0
    skipped_gpu: int = 0
    failed: list[tuple[str, str]] | None = None
    wall_s: float = 0.0


def run_suite(task_name: str, options, only: str | None = None, path: Path | None = None,
              log=print, dry_run: bool = False) -> SuiteReport:
    """Run every run of a task's suite that has no record yet (resume), then re-render pages."""
    import time
    import traceback

    from tqdm.auto import tqdm

    from .env import resolve_device
    from .methods import create_method
    from .run import build_method, load_task_splits, record_key, run_one
    from .tasks import get_task

    task = get_task(task_name)
    suite = load_suite(path or task.suite_path(), task.name)
    specs = suite.specs(quick=options.quick, only=only)
    if only and not specs:
        names = sorted({b.method for b in suite.blocks} | {b.label for b in suite.blocks})
        raise UserError(f"suite {suite.path.name} has no run {only!r}; it has: {', '.join(names)}")
    for spec in specs:  # fail fast on unknown methods / parameters, before hours of work
        create_method(spec.method, **spec.params)

    device = resolve_device(options.device)
    gpu_blocks = {b.index for b in suite.blocks if b.gpu_only}
    report = SuiteReport(task=task.name, failed=[])
    if device == "cpu":
        skipped = [s for s in specs if s.block in gpu_blocks]
        report.skipped_gpu = len(skipped)
        if skipped:
            labels = sorted({s.label for s in skipped})
            log(f"skipping {len(skipped)} GPU-protocol run(s) on the CPU: {'; '.join(labels)} "
                f"(run with --device cuda on a GPU machine)")
        specs = [s for s in specs if s.block not in gpu_blocks]

    t0 = time.perf_counter()
    splits = load_task_splits(task, options, seed=0)
    log(f"{task.name}: train {len(splits[0])} / test {len(splits[1])} images "
        f"({splits[1].meta.get('variant', '')}){' [quick]' if options.quick else ''}; "
        f"{len(specs)} run(s) on {device}")
    from .results import completed_keys

    done_keys = set() if options.force else completed_keys(task.name)
    bar = tqdm(specs, desc=f"suite {task.name}", unit="run", disable=not options.progress)
    if dry_run:
        bar.close()
        for spec in specs:
            method = build_method(spec, options)
            recorded = record_key(task, *splits, spec, method, options.quick) in done_keys
            report.resumed += recorded
            log(f"  {'recorded' if recorded else 'to run  '}  {_short(spec)}")
        return report
    for spec in bar:
        bar.set_postfix_str(_short(spec), refresh=False)
        if not options.force:
            method = build_method(spec, options)
            if record_key(task, *splits, spec, method, options.quick) in done_keys:
                report.resumed += 1
                continue
        try:
            rec = run_one(task, spec, options, splits=splits)
        except UserError:
            raise
        except Exception as exc:  # one broken run must not lose a long suite
            report.failed.append((_short(spec), f"{type(exc).__name__}: {exc}"))
            log(f"run failed: {_short(spec)}: {type(exc).__name__}: {exc}")
            log("".join(traceback.format_exception(exc, limit=-3)))
            continue
        if rec is not None:
            report.done += 1
            m = rec["metrics"]
            bar.write(f"  {_short(spec)}: {task.primary} {m.get(task.primary, m['accuracy']):.4f} "
                      f"({rec['timings']['total_s']:.1f} s)")
        else:
            report.resumed += 1
    report.wall_s = time.perf_counter() - t0
    return report


def _short(spec) -> str:
    params = ", ".join(f"{k}={spec.params[k]}" for k in spec.sweep) if spec.sweep else ""
    return f"{spec.label}" + (f" [{params}]" if params else "") + (f" seed={spec.seed}" if spec.seed else "")
