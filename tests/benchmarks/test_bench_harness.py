"""Harness overhead: metrics for one run, so the evaluation never dominates a fast method."""

import numpy as np

from cvbench.metrics import evaluate


def test_bench_evaluate_1500x15(benchmark):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(15), 100)
    scores = rng.random((1500, 15)) + np.eye(15)[y] * 0.5
    classes = tuple(f"c{i}" for i in range(15))
    m = benchmark(evaluate, y, scores, classes, metrics=("topk",), seed=0)
    assert 0.5 < m["accuracy"] <= 1.0
