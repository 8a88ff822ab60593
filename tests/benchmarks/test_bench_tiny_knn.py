"""Speed of the tiny-image baseline: extraction, k-NN on 1500 x 1500, and a cached k-sweep.

Target (issue 3): the whole tiny-image sweep on scene15 (k = 1..10 x L1, L2), cold cache, under
5 s on 2 cores; a re-run on cached features under 2 s. The real-data runs are marked slow.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from cvbench.baselines import tiny
from cvbench.baselines.knn import NEIGHBOUR_CACHE, knn_scores
from cvbench.baselines.tiny import tiny_features, tiny_images
from cvbench.split import Split
from tests.conftest import task_data


def _sweep(train_X, train_y, test_X, n_classes):
    return [
        knn_scores(train_X, train_y, test_X, k=k, metric=m, n_classes=n_classes)
        for m in ("l1", "l2")
        for k in range(1, 11)
    ]


@pytest.fixture
def synthetic_jpegs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(60):
        p = tmp_path / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (256, 300), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return Split(items=paths, labels=np.arange(60) % 3, classes=("a", "b", "c"), name="syn",
                 root=str(tmp_path))


def test_bench_tiny_extract_synthetic_60(benchmark, synthetic_jpegs):
    out = benchmark(tiny_images, synthetic_jpegs, 16, False, cache=False)
    assert out.shape == (60, 16, 16)


def test_bench_knn_l1_1500x1500(benchmark):
    rng = np.random.default_rng(0)
    train_X, test_X = rng.random((1500, 256), np.float32), rng.random((1500, 256), np.float32)
    train_y = np.repeat(np.arange(15), 100)
    s = benchmark(knn_scores, train_X, train_y, test_X, k=1, metric="l1", n_classes=15, cache=False)
    assert s.shape == (1500, 15)


def test_bench_cached_k_sweep_1500x1500(benchmark):
    rng = np.random.default_rng(1)
    train_X, test_X = rng.random((1500, 256), np.float32), rng.random((1500, 256), np.float32)
    train_y = np.repeat(np.arange(15), 100)
    _sweep(train_X, train_y, test_X, 15)  # fills the neighbour cache
    hits = NEIGHBOUR_CACHE.hits
    out = benchmark(_sweep, train_X, train_y, test_X, 15)
    assert len(out) == 20 and NEIGHBOUR_CACHE.hits >= hits + 20


@pytest.mark.slow
@pytest.mark.realdata
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
def test_bench_tiny_extract_scene15_train(benchmark, real_data):
    """Decode + shrink the 1500 scene15 training images (no cache), 2 jobs."""
    from cvbench.tasks.scene15.reader import read as read_scene15

    train, _ = read_scene15(task_data(real_data, "scene15"))
    out = benchmark.pedantic(tiny_images, args=(train, 16, False),
                             kwargs={"n_jobs": 2, "cache": False}, rounds=1, iterations=1)
    assert out.shape == (1500, 16, 16)
