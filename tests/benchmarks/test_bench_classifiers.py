"""Speed of the additive kernels of baselines/classifiers.py: the exact chi2 and histogram
intersection kernel matrices, and the homogeneous kernel map (both kernels), on L1-normalised
400-word histograms (scene15's bag-of-words size). Guarded by `pytest --benchmark`."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.baselines.classifiers import chi2_kernel, homogeneous_kernel_map, intersection_kernel


def _histograms(n: int, dim: int = 400, seed: int = 0) -> np.ndarray:
    h = np.random.default_rng(seed).gamma(0.3, size=(n, dim))
    return (h / h.sum(1, keepdims=True)).astype(np.float32)


def test_bench_chi2_kernel(benchmark):
    A, B = _histograms(200), _histograms(1000, seed=1)
    K = benchmark(chi2_kernel, A, B)
    assert K.shape == (200, 1000) and np.all(K <= 1 + 1e-6)
    benchmark.extra_info.update(rows=200, cols=1000, dim=400)


def test_bench_intersection_kernel(benchmark):
    A, B = _histograms(200), _histograms(1000, seed=1)
    K = benchmark(intersection_kernel, A, B)
    assert K.shape == (200, 1000) and np.all(K <= 1 + 1e-6)
    benchmark.extra_info.update(rows=200, cols=1000, dim=400)


@pytest.mark.parametrize("kernel", ["chi2", "intersection"])
def test_bench_kernel_map(benchmark, kernel):
    X = _histograms(1500)
    Z = benchmark(homogeneous_kernel_map, X, kernel, 2)
    assert Z.shape == (1500, 400 * 5)
    benchmark.extra_info.update(rows=1500, dim=400, order=2)
