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
    select = "test"                # "validation": see cvbench.plan (a sweep chosen on validation)

A list value expands into a sweep: the cartesian product across all list-valued keys, of
params and conditions alike. The whole file is checked before anything runs: key names and
types, empty sweeps, unknown methods, parameters and conditions, and every parameter value of
every sweep point (the method's declared limits), so a bad point fails at once, not half-way.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .plan import SELECT_MODES, Block, RunSpec, expand

_BLOCK_KEYS = {"method", "label", "params", "conditions", "quick", "seeds", "gpu_only", "skip_quick",
               "select"}
_TOP_KEYS = {"task", "description", "defaults", "run"}


@dataclass
class Suite:
    task: str
    path: Path
    blocks: list[Block]
    description: str = ""

    def specs(self, quick: bool = False, only: str | None = None) -> list[RunSpec]:
        """Every block expanded into RunSpecs (`cvbench.plan.expand`), optionally one method/label."""
        return expand(self.blocks, quick, only)

    @property
    def gpu_blocks(self) -> set[int]:
        return {b.index for b in self.blocks if b.gpu_only}


def _check_method_name(name: str, where: str) -> None:
    """A [defaults.X] table must name a method (a misspelled one would be ignored silently)."""
    import difflib

    from .method_index import method_index

    names = set(method_index())
    if name in names:
        return
    from .methods import method_infos  # plugins too, before saying no

    names |= {m.name for m in method_infos()}
    if name not in names:
        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; methods: {', '.join(sorted(names))}"
        raise UserError(f"{where} names no method{hint}")


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
    for name in defaults:
        _check_method_name(name, f"{path}: [defaults.{name}]")
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
        select = r.get("select", "test")
        if select not in SELECT_MODES:
            raise UserError(f"{where}: 'select' must be one of {', '.join(map(repr, SELECT_MODES))}, got {select!r}")
        params = {**defaults.get(r["method"], {}), **r.get("params", {})}
        for table in (params, r.get("conditions", {}), r.get("quick", {})):
            for k, v in table.items():
                if isinstance(v, list) and not v:
                    raise UserError(f"{where}: {k} = [] is an empty sweep; give at least one value")
        blocks.append(Block(
            index=i, method=r["method"], label=label, params=params,
            conditions=dict(r.get("conditions", {})), quick=dict(r.get("quick", {})), seeds=seeds,
            gpu_only=r.get("gpu_only", False), skip_quick=r.get("skip_quick", False), select=select,
        ))
    return Suite(task=task, path=path, blocks=blocks, description=data.get("description", ""))
