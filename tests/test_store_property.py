"""Property-style test of the results store: random interleavings of appends, replacements
and simulated crashes (a writer killed mid-write leaves its temp file cut at a random byte)
never lose or duplicate a record, and no temp file survives the next open."""

from __future__ import annotations

import json
import random

import pytest

from cvbench.results import RunRecord, append_record, load_records, results_path


def _record(key: str, acc: float) -> RunRecord:
    return RunRecord(key=key, task="demo", method="m", params={}, seed=0, label="m",
                     data={"variant": "v", "test": {"n": 1}}, metrics={"accuracy": acc}, timings={})


@pytest.mark.parametrize("trial", range(12))
def test_random_interleavings_never_lose_or_duplicate(tmp_path, trial):
    rng = random.Random(trial)
    path = results_path("demo", tmp_path)
    expected: dict[str, float] = {}
    for step in range(rng.randint(20, 60)):
        action = rng.random()
        if action < 0.6 or not expected:  # a new run
            key, acc = f"k{step}", rng.random()
            append_record(_record(key, acc), tmp_path)
            expected[key] = acc
        elif action < 0.85:  # a re-run replaces its record
            key = rng.choice(sorted(expected))
            acc = rng.random()
            append_record(_record(key, acc), tmp_path)
            expected[key] = acc
        else:  # a writer killed mid-write: its temp copy, cut at a random byte, stays behind
            full = path.read_text() + _record(f"lost{step}", 0.0).to_json() + "\n"
            cut = full[: rng.randint(0, len(full))]
            (path.parent / f".{path.name}.{rng.getrandbits(32):08x}.tmp").write_text(cut)
        if rng.random() < 0.3:  # someone reads in between
            got = {r.key: r.metrics["accuracy"] for r in load_records("demo", tmp_path)}
            assert got == expected
            assert not list(path.parent.glob(".*.tmp"))
    records = load_records("demo", tmp_path)
    assert {r.key: r.metrics["accuracy"] for r in records} == expected
    lines = [json.loads(x)["key"] for x in path.read_text().splitlines() if x.strip()]
    assert len(lines) == len(set(lines)) == len(expected)  # one line per run key
    assert not list(path.parent.glob(".*.tmp"))
