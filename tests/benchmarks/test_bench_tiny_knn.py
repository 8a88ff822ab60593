"""Speed of the tiny-image baseline: extraction, k-NN (every metric), a cached k-sweep, and
the ratio invariant "a k-sweep on cached features is at least 20x faster than its cold run".

Target (issue 3): the whole tiny-image sweep on scene15 (k = 1..10 x L1, L2), cold cache, under
5 s on 2 cores; a re-run on cached features under 2 s. The real-data runs are marked slow.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from PIL import Image

from cvbench.baselines import tiny
from cvbench.baselines.knn import METRICS, NEIGHBOUR_CACHE, knn_scores
from cvbench.baselines.tiny import TinyKNN, tiny_features, tiny_images
from cvbench.split import Split
from tests.benchmarks.guard import paired_ratio
from tests.conftest import task_data


def _sweep(train_X, train_y, test_X, n_classes):
    return [
        knn_scores(train_X, train_y, test_X, k=k, metric=m, n_classes=n_classes)
        for m in ("l1", "l2")
        for k in range(1, 11)
    ]


def _jpeg_split(folder, n: int, seed: int = 0, name: str = "syn") -> Split:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (256, 300), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return Split(items=paths, labels=np.arange(n) % 3, classes=("a", "b", "c"), name=name,
                 root=str(folder))


@pytest.fixture
def synthetic_jpegs(tmp_path):
    return _jpeg_split(tmp_path, 60)


def test_bench_tiny_extract_synthetic_60(benchmark, synthetic_jpegs):
    out = benchmark(tiny_images, synthetic_jpegs, 16, False, cache=False)
    assert out.shape == (60, 16, 16)


@pytest.mark.parametrize("metric", METRICS)
def test_bench_knn(benchmark, metric):
    """1500 training rows x 256 dims; 1500 test rows (300 for chi2: sklearn's Cython kernel is
    ~30x slower than the others)."""
    rng = np.random.default_rng(0)
    n_test = 300 if metric == "chi2" else 1500
    train_X, test_X = rng.random((1500, 256), np.float32), rng.random((n_test, 256), np.float32)
    train_y = np.repeat(np.arange(15), 100)
    s = benchmark(knn_scores, train_X, train_y, test_X, k=1, metric=metric, n_classes=15, cache=False)
    assert s.shape == (n_test, 15)
    benchmark.extra_info.update(metric=metric, train=1500, test=n_test, dim=256)


def test_bench_cached_k_sweep_1500x1500(benchmark):
    rng = np.random.default_rng(1)
    train_X, test_X = rng.random((1500, 256), np.float32), rng.random((1500, 256), np.float32)
    train_y = np.repeat(np.arange(15), 100)
    _sweep(train_X, train_y, test_X, 15)  # fills the neighbour cache
    hits = NEIGHBOUR_CACHE.hits
    out = benchmark(_sweep, train_X, train_y, test_X, 15)
    assert len(out) == 20 and NEIGHBOUR_CACHE.hits >= hits + 20


def test_ratio_k_sweep_cached_vs_cold(benchmark, speed_guard, tmp_path, monkeypatch):
    """The tiny-knn study grid (k = 1..10 x L1, L2) as `cvbench run` sweeps it (a method per
    point, fit + predict) on 150 + 150 synthetic scene15-sized JPEGs: cold (empty caches: decode,
    distances) vs on cached features. Both timed interleaved in this process; ratio >= 20."""
    train = _jpeg_split(tmp_path / "train", 150, seed=1, name="syn-train")
    test = _jpeg_split(tmp_path / "test", 150, seed=2, name="syn-test")
    colds = itertools.count()

    def sweep():
        return [TinyKNN(k=k, metric=m, n_jobs=1).fit(train).predict_scores(test)
                for m in ("l1", "l2") for k in range(1, 11)]

    def empty_caches():
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"cache{next(colds)}"))
        tiny._mem_cache.clear()
        NEIGHBOUR_CACHE.clear()

    empty_caches()
    sweep()  # warm-up (imports, allocator); leaves the caches full for the cached side
    t = speed_guard.interleave({"cold": sweep, "cached": sweep}, speed_guard.rounds(5),
                               before_each={"cold": empty_caches})
    ratio = paired_ratio(t["cold"], t["cached"])
    out = benchmark.pedantic(sweep, rounds=speed_guard.rounds(20), iterations=1)  # ~20 ms each
    assert len(out) == 20 and out[0].shape == (150, 3)
    benchmark.extra_info.update(cold_s=round(float(np.median(t["cold"])), 4),
                                cached_s=round(float(np.median(t["cached"])), 4),
                                cold_over_cached=round(ratio, 1))
    speed_guard.at_least("k-sweep cold / cached", ratio, 20,
                         f"cold {np.median(t['cold']):.3f} s, cached {np.median(t['cached']):.4f} s")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.benchmark(timer=time.perf_counter)  # decodes in joblib workers: wall clock
def test_bench_scene15_full_sweep_cold(benchmark, real_data, tmp_path, monkeypatch):
    """The whole study grid on scene15 from image files (cold caches each round)."""
    from cvbench.tasks.scene15.reader import read as read_scene15

    train, test = read_scene15(task_data(real_data, "scene15"))
    rounds = itertools.count()

    def setup():
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"cache{next(rounds)}"))
        tiny._mem_cache.clear()
        NEIGHBOUR_CACHE.clear()

    def run():
        Xtr = tiny_features(train, n_jobs=2)
        Xte = tiny_features(test, n_jobs=2)
        return _sweep(Xtr, train.labels, Xte, 15)

    out = benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
    acc = (out[0].argmax(1) == test.labels).mean()  # k=1, L1
    assert acc > 0.2


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.benchmark(timer=time.perf_counter)  # decodes in joblib workers: wall clock
def test_bench_tiny_extract_scene15_train(benchmark, real_data):
    """Decode + shrink the 1500 scene15 training images (no cache), 2 jobs."""
    from cvbench.tasks.scene15.reader import read as read_scene15

    train, _ = read_scene15(task_data(real_data, "scene15"))
    out = benchmark.pedantic(tiny_images, args=(train, 16, False),
                             kwargs={"n_jobs": 2, "cache": False}, rounds=1, iterations=1)
    assert out.shape == (1500, 16, 16)
