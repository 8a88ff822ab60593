"""The results store: one JSONL file per task under leaderboard/results/, read as `RunRecord`s.

Each line is one run record (schema version SCHEMA). A stable run key (task, data
fingerprints, method, key parameters, conditions, seed) lets a re-run replace its old record
and an interrupted suite resume. Appends are atomic: the new file is written beside the old
one and renamed over it, under a lock, so a crash never leaves half a record and parallel
suites never lose one. A line that does not validate is reported (file:line and the field)
and skipped; the other records are kept. Older schemas migrate on load (`RunRecord.from_json`).

Nothing outside this module reads a record as a raw dict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_open
from .paths import leaderboard_dir

SCHEMA = 3
FIXTURE_MARK = "GENERATED FIXTURE"


class RecordError(ValueError):
    """A stored line is not a valid run record; the message names the field."""


def run_key(task: str, fingerprints: Iterable[str], method: str, params: dict, seed: int,
            quick: bool = False, conditions: dict | None = None) -> str:
    """Stable hash naming one run: same task, data, method, parameters, conditions and seed
    -> same key. (Runs without conditions hash exactly as schema 1 did, so their keys stay.)"""
    payload: dict[str, Any] = {"task": task, "data": list(fingerprints), "method": method,
                               "params": params, "seed": seed, "quick": bool(quick)}
    if conditions:
        payload["conditions"] = dict(sorted(conditions.items()))
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ the record
_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,), "task": (str,), "method": (str,), "family": (str,), "params": (dict,),
    "seed": (int,), "label": (str,), "block": (int,), "sweep": (list,), "conditions": (dict,),
    "quick": (bool,), "data": (dict,), "metrics": (dict,), "predictions": (dict,),
    "timings": (dict,), "info": (dict,), "budget": (dict,), "device": (dict,),
    "versions": (dict,), "git": (str,), "started": (str,), "method_facts": (dict,),
    "command": (list,), "schema": (int,),
}
REQUIRED = ("key", "task", "method", "params", "seed", "label", "data", "metrics", "timings")


BUSY_LOAD = 1.25  # 1-minute load average per core above which a run's timing was shared


@dataclass
class RunRecord:
    """One run: what ran (method, parameters, conditions, seed, data), what it scored, how
    long it took, on what, from which revision. See DESIGN.md for the fields."""

    key: str
    task: str
    method: str
    params: dict[str, Any]
    seed: int
    label: str
    data: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, Any]
    family: str = "classical"
    block: int = 0
    sweep: list[str] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    predictions: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    git: str = ""
    started: str = ""
    method_facts: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)  # the command line that asked for the run
    schema: int = SCHEMA

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_json(cls, d: Any) -> RunRecord:
        """Validate a decoded JSON line and migrate older schemas; RecordError names the field."""
        if not isinstance(d, dict):
            raise RecordError("not a JSON object")
        version = d.get("schema", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordError(f"field 'schema' is {version!r}, expected an integer")
        if version > SCHEMA:
            raise RecordError(f"schema {version} is newer than this cvbench ({SCHEMA}); upgrade cvbench")
        if version < 2:
            d = _migrate_v1(dict(d))
        if version < 3:
            d = _migrate_v2(dict(d))
        for name in REQUIRED:
            if name not in d:
                raise RecordError(f"missing field {name!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for name, value in values.items():
            types = _TYPES.get(name)
            if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
                raise RecordError(f"field {name!r} is {type(value).__name__} {str(value)[:40]!r}, "
                                  f"expected {types[0].__name__}")
        if "accuracy" not in d["metrics"]:
            raise RecordError("field 'metrics' has no 'accuracy'")
        for name, value in d["metrics"].items():  # a NaN or infinite score is no score
            numbers = value if isinstance(value, list) and name.endswith("_ci") else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise RecordError(f"metric {name!r} is {value!r}, not a finite number")
        if not isinstance(d["data"].get("test"), dict) or "n" not in d["data"]["test"]:
            raise RecordError("field 'data' has no test split description")
        values["schema"] = SCHEMA
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"),
                          default=_json_default)

    # ---------------------------------------------------------------- what pages read
    @property
    def variant(self) -> str:
        return str(self.data.get("variant") or self.task)

    @property
    def is_fixture(self) -> bool:
        return FIXTURE_MARK in self.variant

    @property
    def test_n(self) -> int:
        return int(self.data["test"]["n"])

    @property
    def composition(self) -> dict[str, Any]:
        """What a training composition drew (counts per group, total), when one did."""
        return dict((self.data.get("train_used") or {}).get("composition")
                    or self.info.get("composition") or {})

    @property
    def train_n(self) -> int:
        used = self.data.get("train_used") or self.data.get("train") or {}
        return int(self.composition.get("total") or used.get("n") or 0)

    @property
    def test_fingerprint(self) -> str:
        return str(self.data["test"].get("fingerprint", ""))

    @property
    def class_names(self) -> list[str] | None:
        """The classes in the task's order, as the run stored them (records before schema 3
        did not: their class_counts keys are sorted, so the task's order comes from the task;
        cvbench.aggregate.task_classes)."""
        stored = self.data.get("classes")
        return list(stored) if stored else None

    @property
    def cache_hits(self) -> tuple[str, ...] | None:
        """The stages (of fit or predict) a cache served, () for a cold run, None when the
        run did not record its cache use."""
        usage = self.info.get("cache")
        if not isinstance(usage, dict):
            return None
        return tuple(sorted({stage for side in usage.values() if isinstance(side, dict)
                             for stage, c in side.items() if isinstance(c, dict) and c.get("hits")}))

    @property
    def fit_seconds(self) -> float:
        """Training time: a deep run resumed from its checkpoint reports the time spent
        training across sessions (train_s), not the seconds of the call that restored it."""
        t = self.timings
        return max(float(t.get("fit_s") or 0.0), float(t.get("train_s") or 0.0))

    @property
    def run_seconds(self) -> float:
        return self.fit_seconds + float(self.timings.get("predict_s") or 0.0)

    @property
    def per_image_ms(self) -> float:
        return float(self.timings.get("per_image_ms") or 0.0)

    @property
    def dirty(self) -> bool:
        return self.git.endswith("+dirty")

    @property
    def busy(self) -> bool:
        """Timed on a machine someone else was using too: a run's own threads keep the load
        at about its core count, so only a load above BUSY_LOAD x the cores counts."""
        return self.busy_factor > BUSY_LOAD

    @property
    def busy_factor(self) -> float:
        """Highest 1-minute load average around the run per core (> 1: timed on a busy machine)."""
        loads = [x for x in (self.timings.get("load_avg") or []) if isinstance(x, (int, float))]
        cores = self.device.get("cpu_count") or 1
        return max(loads) / cores if loads else 0.0

    @property
    def curves(self) -> dict[str, list]:
        return dict(self.info.get("curves") or {})

    @property
    def device_name(self) -> str:
        return str(self.device.get("name", ""))

    @property
    def device_type(self) -> str:
        return str(self.device.get("type", ""))

    @property
    def feature_cache_params(self) -> tuple[str, ...]:
        return tuple(self.method_facts.get("feature_cache_params") or ())

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.method_facts.get("defaults") or {})

    def metric(self, name: str) -> float | None:
        v = self.metrics.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def interval(self, name: str) -> tuple[float, float] | None:
        ci = self.metrics.get(f"{name}_ci")
        return (float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 else None

    def group_accuracy(self, spec: str) -> dict[str, float]:
        pg = ((self.metrics.get("groups") or {}).get(spec) or {}).get("per_group") or {}
        return {g: float(v["accuracy"]) for g, v in pg.items()}

    def group_summary(self, spec: str) -> dict[str, float]:
        return dict(((self.metrics.get("groups") or {}).get(spec) or {}).get("summary") or {})

    def y_true(self) -> list[int]:
        return list(self.predictions.get("y_true") or [])

    def y_pred(self) -> list[int]:
        return list(self.predictions.get("y_pred") or [])

    def test_groups(self, key: str) -> list[str] | None:
        g = (self.predictions.get("groups") or {}).get(key)
        return list(g) if g is not None else None

    def item_ids(self) -> list[str] | None:
        ids = self.predictions.get("ids")
        return list(ids) if ids is not None else None

    def top_classes(self) -> list[list[int]] | None:
        """Per-item ranked class indices (top 5), when stored."""
        top = self.predictions.get("top5") or (self.predictions.get("topk") or {}).get("classes")
        return list(top) if top is not None else None


# ------------------------------------------------------------------------------ migration
# Schema 1 had task-by-method products: a method wrapped by a task's protocol. Schema 2
# names the plain method and records the protocol as conditions.
_V1_RENAMES = {
    "fairface-resnet": "cnn", "fairface-tiny-knn": "tiny-knn", "fairface-bow-sift": "bow-sift",
    "hotelid-cnn": "cnn", "hotel-retrieval": "cnn-retrieval", "hotelid-tiny-knn": "tiny-knn",
    "hotelid-bow-sift": "bow-sift",
}
_V1_FEATURE_CACHE = {"tiny-knn": ["k", "metric", "weighted"],
                     "bow-sift": ["k", "metric", "weighted", "hist_norm", "classifier", "C", "kernel_mode"]}
_V1_WRAPPER_SEED = {"tiny-knn"}  # plain methods without a seed parameter the wrappers added
_COMPOSITION = ("composition", "composition_total", "composition_key")
_OCCLUSION = ("train_occlusion", "test_occlusion", "occlusion_fill", "occlusion_p")


def _migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: conditions out of the wrapped methods' parameters (and a new run key
    for those runs), method facts, and `family` kept."""
    old = d.get("method")
    params = dict(d.get("params") or {})
    conditions: dict[str, Any] = {}
    if old in _V1_RENAMES:
        new = _V1_RENAMES[old]
        if old.startswith("fairface"):
            comp = {k: params.pop(k, None) for k in _COMPOSITION}
            if not (comp["composition"] == "natural" and int(comp["composition_total"] or 0) > 0):
                conditions["composition"] = comp["composition"]  # else: the whole training split
        else:
            occ = {k: params.pop(k, None) for k in _OCCLUSION}
            conditions = {"train_occlusion": occ["train_occlusion"], "test_occlusion": occ["test_occlusion"]}
        if new in _V1_WRAPPER_SEED:
            params.pop("seed", None)
        d["method"], d["params"], d["conditions"] = new, params, conditions
        d["key"] = _recomputed_key(d)
    d.setdefault("conditions", conditions)
    facts = dict(d.get("method_facts") or {})
    facts.setdefault("family", d.get("family", "classical"))
    facts.setdefault("feature_cache_params", _V1_FEATURE_CACHE.get(d["method"], []))
    facts.setdefault("defaults", _v1_defaults(d["method"]))
    d["method_facts"] = facts
    d["schema"] = 2
    return d


def _migrate_v2(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: a method whose parameters were renamed says how, in its own
    `migrate_params(params) -> params` (e.g. retinopathy's objective="regression" became
    "ordinal"); changed parameters get the run key the current planner computes."""
    hook = _migrate_hook(d.get("method", ""))
    if hook is not None:
        params = hook(dict(d.get("params") or {}))
        facts = dict(d.get("method_facts") or {})
        if facts.get("defaults"):
            facts["defaults"] = hook(dict(facts["defaults"]))
            d["method_facts"] = facts
        if params != d.get("params"):
            d["params"] = params
            d["key"] = _recomputed_key(d)
    d["schema"] = SCHEMA
    return d


def _migrate_hook(method: str):
    try:
        from .methods import get_method_spec

        return getattr(get_method_spec(method).cls, "migrate_params", None)
    except Exception:  # a method no longer registered keeps its record as it is
        return None


def _recomputed_key(d: dict[str, Any]) -> str:
    """The schema-2 key of a migrated run: the plain method's key parameters."""
    from .methods import create_method, key_params

    method = create_method(d["method"], **d["params"])
    data = d.get("data") or {}
    prints = [(data.get("train") or {}).get("fingerprint", ""), (data.get("test") or {}).get("fingerprint", "")]
    return run_key(d["task"], prints, d["method"], key_params(method), int(d.get("seed", 0)),
                   bool(d.get("quick")), d.get("conditions") or None)


def _v1_defaults(method: str) -> dict[str, Any]:
    try:
        from .methods import RUNTIME_PARAMS, get_method_spec

        return {k: v for k, v in sorted(get_method_spec(method).params().items()) if k not in RUNTIME_PARAMS}
    except Exception:  # a method no longer registered: its facts are unknown
        return {}


# ------------------------------------------------------------------------------ the store
def results_path(task: str, root: Path | None = None) -> Path:
    return (root or leaderboard_dir()) / "results" / f"{task}.jsonl"


def read_lines(path: Path) -> Iterable[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, line


def load_records(task: str, root: Path | None = None, warn=None) -> list[RunRecord]:
    """All valid records of `task`, in file order; invalid lines are reported with
    file:line and the reason, and skipped. When a key appears several times, the last wins."""
    path = results_path(task, root)
    if not path.exists():
        return []
    if any(path.parent.glob(f".{path.name}.*.tmp")):
        with _locked(path):  # under the lock no live writer owns one: a killed writer's copy
            _remove_stale_temps(path)
    warn = warn or (lambda msg: print(f"cvbench: {msg}", file=sys.stderr))
    by_key: dict[str, RunRecord] = {}
    first_line: dict[str, int] = {}
    for lineno, line in read_lines(path):
        try:
            rec = RunRecord.from_json(parse_line(line))
            if rec.task != task:
                raise RecordError(f"field 'task' is {rec.task!r}, but the file is {path.name}")
        except (json.JSONDecodeError, RecordError, ValueError, TypeError) as exc:
            warn(f"{path}:{lineno}: record skipped ({exc})")
            continue
        if rec.key in by_key:
            warn(f"{path}:{lineno}: key {rec.key} also on line {first_line[rec.key]}; the later "
                 "record replaces the earlier (a run that is appended again replaces its line)")
        by_key.pop(rec.key, None)
        by_key[rec.key] = rec
        first_line[rec.key] = lineno
    return list(by_key.values())


def parse_line(line: str) -> Any:
    """One JSON line, refusing an object that names a member twice (json would keep the
    last silently)."""
    def pairs(items):
        seen = set()
        for k, _v in items:
            if k in seen:
                raise RecordError(f"member {k!r} appears twice")
            seen.add(k)
        return dict(items)

    return json.loads(line, object_pairs_hook=pairs)


def completed_keys(task: str, root: Path | None = None) -> set[str]:
    return {r.key for r in load_records(task, root, warn=lambda m: None)}


def append_record(record: RunRecord, root: Path | None = None) -> Path:
    """Append one record to its task's JSONL, atomically (copy + new line + rename).

    A record with the same key as an existing one supersedes it: the old line is dropped so
    the file stays one line per run key. Temp files a killed writer left behind are removed
    under the same lock.
    """
    path = results_path(record.task, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        _remove_stale_temps(path)
        _replace_lines(path, [record])
    return path


def rewrite_records(task: str, root: Path | None = None, warn=None) -> int:
    """Rewrite a task's file with every valid line migrated to the current schema, in file
    order; a line that does not validate is kept as it is and reported (file:line, why), and
    no line is dropped. Returns the number of records at the current schema."""
    path = results_path(task, root)
    if not path.exists():
        return 0
    warn = warn or (lambda msg: print(f"cvbench: {msg}", file=sys.stderr))
    with _locked(path):
        out, n = [], 0
        for lineno, line in read_lines(path):
            try:
                out.append(RunRecord.from_json(parse_line(line)).to_json() + "\n")
                n += 1
            except (json.JSONDecodeError, RecordError, ValueError, TypeError) as exc:
                warn(f"{path}:{lineno}: kept as it is, not migrated ({exc})")
                out.append(line if line.endswith("\n") else line + "\n")
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.writelines(out)
    return n


@contextmanager
def _locked(path: Path):
    """Exclusive lock beside the results file, so parallel suites never lose a record."""
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temps(path: Path) -> None:
    """Temp copies (cvbench.atomic names them .<name>.<random>.tmp) left by a killed writer.
    Called with the lock held, so no live writer of this file owns one."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _replace_lines(path: Path, records: list[RunRecord]) -> None:
    keys = {r.key for r in records}
    lines: list[str] = []
    if path.exists():
        for _lineno, line in read_lines(path):
            try:
                if json.loads(line).get("key") in keys:
                    continue
            except (json.JSONDecodeError, AttributeError):
                pass  # keep invalid lines as they are; load_records reports them
            lines.append(line if line.endswith("\n") else line + "\n")
    lines += [r.to_json() + "\n" for r in records]
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, (Path, os.PathLike)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
