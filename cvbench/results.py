"""The results store: one append-only JSONL file per task under leaderboard/results/.

Each line is one run record (schema version SCHEMA). A stable run key (task, data
fingerprints, method, key parameters, seed) lets a re-run replace its old record and an
interrupted suite resume. Appends are atomic: the new file is written beside the old one and
renamed over it, so a crash never leaves half a record. A corrupt line is reported and
skipped; the other records are kept.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import atomic_open
from .paths import leaderboard_dir

SCHEMA = 1


def run_key(task: str, fingerprints: Iterable[str], method: str, params: dict, seed: int,
            quick: bool = False) -> str:
    """Stable hash naming one run: same task, data, method, parameters and seed -> same key."""
    payload = json.dumps(
        {"task": task, "data": list(fingerprints), "method": method, "params": params,
         "seed": seed, "quick": bool(quick)},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def results_path(task: str, root: Path | None = None) -> Path:
    return (root or leaderboard_dir()) / "results" / f"{task}.jsonl"


def load_records(task: str, root: Path | None = None, warn=None) -> list[dict[str, Any]]:
    """All valid records of `task`, in file order; corrupt lines are reported and skipped.

    When a key appears several times, the last record wins (a re-run replaces its old one).
    """
    path = results_path(task, root)
    if not path.exists():
        return []
    warn = warn or (lambda msg: print(f"cvbench: {msg}", file=sys.stderr))
    by_key: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "key" not in rec or "metrics" not in rec:
                    raise ValueError("not a run record (no key/metrics)")
            except (json.JSONDecodeError, ValueError) as exc:
                warn(f"{path}:{lineno}: corrupt record skipped ({exc})")
                continue
            if rec.get("schema", 0) > SCHEMA:
                warn(f"{path}:{lineno}: record schema {rec.get('schema')} is newer than {SCHEMA}; skipped")
                continue
            by_key.pop(rec["key"], None)
            by_key[rec["key"]] = rec
    return list(by_key.values())


def completed_keys(task: str, root: Path | None = None) -> set[str]:
    return {r["key"] for r in load_records(task, root, warn=lambda m: None)}


def append_record(record: dict[str, Any], root: Path | None = None) -> Path:
    """Append one record to its task's JSONL, atomically (copy + new line + rename).

    A record with the same key as an existing one supersedes it: the old line is dropped so
    the file stays one line per run key.
    """
    record = {"schema": SCHEMA, **record}
    path = results_path(record["task"], root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        _replace_line(path, record)
    return path


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


def _replace_line(path: Path, record: dict[str, Any]) -> None:
    lines: list[str] = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    if json.loads(line).get("key") == record["key"]:
                        continue
                except (json.JSONDecodeError, AttributeError):
                    pass  # keep corrupt lines as they are; load_records reports them
                lines.append(line if line.endswith("\n") else line + "\n")
    lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), default=_json_default) + "\n")
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
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
