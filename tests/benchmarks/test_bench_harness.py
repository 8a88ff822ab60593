"""Harness overhead: metrics (with their bootstrap intervals) for one run, so the evaluation
never dominates a fast method; and (slow) rendering the leaderboard from every committed record.
Guarded by `pytest --benchmark` (slow ones: `make bench`)."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

# the harness' public functions, imported here only
from cvbench.leaderboard import render_all
from cvbench.metrics import bootstrap_ci, evaluate, paired_bootstrap_diff

RESULTS = Path(__file__).resolve().parents[2] / "leaderboard" / "results"


def test_bench_evaluate_1500x15(benchmark):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(15), 100)
    scores = rng.random((1500, 15)) + np.eye(15)[y] * 0.5
    classes = tuple(f"c{i}" for i in range(15))
    m = benchmark(evaluate, y, scores, classes, metrics=("topk",), seed=0)
    assert 0.5 < m["accuracy"] <= 1.0


def test_bench_bootstrap_ci_1500(benchmark):
    correct = np.random.default_rng(0).random(1500) < 0.7
    lo, hi = benchmark(bootstrap_ci, correct, 1000, 0)
    assert lo < correct.mean() < hi


def test_bench_paired_bootstrap_diff_1500(benchmark):
    rng = np.random.default_rng(0)
    a, b = rng.random(1500) < 0.7, rng.random(1500) < 0.6
    d = benchmark(paired_bootstrap_diff, a, b, 1000, 0)
    assert d["lo"] < d["diff"] < d["hi"]


@pytest.mark.slow
def test_bench_render_leaderboard_all_records(benchmark, tmp_path):
    """Every page and figure from all committed records (leaderboard/results/*.jsonl, copied)."""
    files = sorted(RESULTS.glob("*.jsonl"))
    assert files, f"no committed records under {RESULTS}"
    (tmp_path / "results").mkdir()
    for f in files:
        shutil.copy(f, tmp_path / "results" / f.name)
    index = benchmark.pedantic(render_all, kwargs={"root": tmp_path}, rounds=1, iterations=1)
    assert Path(index).is_file()
    n_records = sum(1 for f in files for line in f.open() if line.strip())
    benchmark.extra_info.update(records=n_records, pages=len(list(tmp_path.glob("*.md"))),
                                figures=len(list(tmp_path.rglob("*.png"))))


def _cvbench(*argv):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cvbench.cli", *argv], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.benchmark(timer=time.perf_counter)  # the work is the child's; the target is a wait
@pytest.mark.parametrize("argv", [("list",), ("--help",)])
def test_bench_start_up(benchmark, speed_guard, argv):
    """`cvbench list` and `--help` in a fresh process (issue 26: < 0.5 s; they import neither
    torch nor scikit-learn, which tests/test_bad_inputs.py asserts). Timed in wall seconds, what
    a user waits: on this process's CPU clock (the default) it measured only the parent's
    ~1 ms around the wait, and the child's CPU seconds count BLAS threads spinning at import."""
    speed_guard.target_seconds(f"cvbench {argv[0]} start-up", 0.5)
    out = benchmark.pedantic(_cvbench, args=argv, rounds=3, iterations=1)
    assert "tiny-knn" in out or "usage" in out
