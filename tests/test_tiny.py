"""Tiny-image features and the tiny-knn / tiny-svm methods."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvbench.baselines import tiny
from cvbench.baselines.tiny import tiny_features, tiny_images
from cvbench.errors import UserError
from cvbench.paths import cache_dir
from cvbench.split import Split


def path_split(tmp_path, n=6, shape=(40, 60), rgb=False, seed=0) -> Split:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=shape + ((3,) if rgb else ()), dtype=np.uint8)
        p = tmp_path / f"img_{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return Split(items=paths, labels=np.arange(n) % 2, classes=("a", "b"), name="t/train",
                 root=str(tmp_path))


def array_split(n=8, shape=(32, 32, 3), seed=0) -> Split:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
    return Split(items=items, labels=np.arange(n) % 3, classes=("a", "b", "c"), name="arr/train")


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    tiny._mem_cache.clear()
    yield
    tiny._mem_cache.clear()


@pytest.mark.parametrize("norm", ["none", "l1", "l2"])
@pytest.mark.parametrize("zero_mean", [True, False])
def test_shape_mean_and_norms(tmp_path, norm, zero_mean):
    split = path_split(tmp_path)
    X = tiny_features(split, size=8, zero_mean=zero_mean, norm=norm)
    assert X.shape == (6, 64) and X.dtype == np.float32
    if zero_mean:
        np.testing.assert_allclose(X.mean(axis=1), 0.0, atol=1e-6 * max(1.0, np.abs(X).max()))
    else:
        assert (X >= 0).all()
    if norm == "l1":
        np.testing.assert_allclose(np.abs(X).sum(axis=1), 1.0, rtol=1e-5)
    elif norm == "l2":
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    else:
        assert np.abs(X).max() > 1.0  # raw intensities


def test_matches_cv2_area_resize_and_crop(tmp_path):
    import cv2

    split = path_split(tmp_path, n=2, shape=(30, 50))
    img = np.asarray(Image.open(split.items[0]))
    imgs = tiny_images(split, size=10, crop=False)
    np.testing.assert_allclose(
        imgs[0], cv2.resize(img.astype(np.float32), (10, 10), interpolation=cv2.INTER_AREA), rtol=1e-6
    )
    cropped = tiny_images(split, size=10, crop=True)
    ref = cv2.resize(img[:, 10:40].astype(np.float32), (10, 10), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(cropped[0], ref, rtol=1e-6)


def test_in_memory_rgb_arrays_match_gray_conversion():
    split = array_split()
    X = tiny_features(split, size=16, zero_mean=False, norm="none")
    assert X.shape == (8, 256)
    from cvbench.images import to_gray

    # 32 -> 16 with area interpolation is a 2x2 mean of the gray image
    g = to_gray(split.items[3]).astype(np.float32)
    np.testing.assert_allclose(X[3].reshape(16, 16), g.reshape(16, 2, 16, 2).mean((1, 3)), atol=1e-4)


def test_constant_image_does_not_divide_by_zero():
    split = Split(items=np.full((2, 8, 8), 7, np.uint8), labels=[0, 1], classes=("a", "b"), name="c")
    X = tiny_features(split, size=4, zero_mean=True, norm="l1")
    assert np.isfinite(X).all() and (X == 0).all()


def test_disk_cache_and_parallel_backends(tmp_path, monkeypatch):
    split = path_split(tmp_path, n=70)  # >= 64 items: really parallel
    serial = tiny_images(split, size=8, cache=False)
    calls = []
    real = tiny._tiny_batch
    monkeypatch.setattr(tiny, "_tiny_batch", lambda *a: calls.append(1) or real(*a))
    threaded = tiny_images(split, size=8, n_jobs=2, joblib_backend="threading")
    np.testing.assert_array_equal(serial, threaded)
    assert len(calls) > 1  # split into batches
    tiny._mem_cache.clear()  # a new process: the disk cache answers, nothing is decoded
    calls.clear()
    again = tiny_images(split, size=8, n_jobs=2, joblib_backend="threading")
    assert calls == []
    np.testing.assert_array_equal(again, serial)
    assert list(cache_dir("tiny").glob(f"{split.cache_key}-s8-c0-*.npy"))


def test_bad_parameters_are_user_errors(tmp_path):
    split = path_split(tmp_path, n=2)
    with pytest.raises(UserError, match="norm"):
        tiny_features(split, norm="max")
    with pytest.raises(UserError, match="joblib_backend"):
        tiny_features(split, joblib_backend="spark")
    with pytest.raises(UserError, match="size"):
        tiny_features(split, size=0)


def separable_arrays(n_per_class=12, seed=0):
    """Three classes of 24x24 gray images: bright top, bright left, bright bottom-right."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(3):
        base = np.full((24, 24), 40.0)
        if c == 0:
            base[:12] = 200
        elif c == 1:
            base[:, :12] = 200
        else:
            base[12:, 12:] = 220
        for _ in range(n_per_class):
            imgs.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
            labels.append(c)
    return Split(items=np.stack(imgs), labels=labels, classes=("top", "left", "corner"), name="toy")


@pytest.mark.parametrize("cls,params,seed", [(tiny.TinyKNN, {"k": 3}, 0), (tiny.TinySVM, {"C": 1.0}, 2)])
def test_methods_classify_a_toy_set(cls, params, seed):
    import json

    train, test = separable_arrays(seed=seed), separable_arrays(n_per_class=5, seed=seed + 1)
    m = cls(size=8, **params).fit(train)
    scores = m.predict_scores(test)
    assert scores.shape == (15, 3)
    assert (m.predict(test) == test.labels).mean() == 1.0
    info = m.info_
    assert info["feature_dim"] == 64
    assert {"extract_s", "classify_s", "extract_test_s"} <= set(scores.info["timings"])
    assert "extract_train_s" in info["timings"]
    assert info["cache_hits"]["tiny_train"] is False
    json.dumps(info)  # JSON-able for the record
    json.dumps(scores.info)
    again = cls(size=8, **params).fit(train)
    assert again.info_["cache_hits"]["tiny_train"] is True
    np.testing.assert_array_equal(again.predict_scores(test), scores)


def test_methods_are_registered():
    from cvbench.methods import create_method, get_method_spec

    assert get_method_spec("tiny-knn").cls is tiny.TinyKNN and get_method_spec("tiny-svm").cls is tiny.TinySVM
    assert create_method("tiny-knn").registered_name == "tiny-knn"
    assert tiny.TinyKNN().get_params()["norm"] == "l1"


def test_k_sweep_reuses_features_and_neighbours():
    from cvbench.baselines.knn import NEIGHBOUR_CACHE

    NEIGHBOUR_CACHE.clear()
    train, test = separable_arrays(seed=5), separable_arrays(n_per_class=4, seed=6)
    first = tiny.TinyKNN(size=8, k=1).fit(train)
    assert first.predict_scores(test).info["cache_hits"]["knn_neighbours"] is False
    for k in (3, 5, 7):
        m = tiny.TinyKNN(size=8, k=k).fit(train)
        assert m.info_["cache_hits"] == {"tiny_train": True}
        assert m.predict_scores(test).info["cache_hits"] == {"tiny_test": True, "knn_neighbours": True}
    other = tiny.TinyKNN(size=8, k=1, norm="l2").fit(train)  # other features: new neighbours
    assert other.predict_scores(test).info["cache_hits"]["knn_neighbours"] is False


@pytest.mark.parametrize("backend,package", [("ray", "ray"), ("dask", "distributed")])
def test_cluster_backends_need_their_package(tmp_path, monkeypatch, backend, package):
    import sys

    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    split = path_split(tmp_path, n=2)
    with pytest.raises(UserError, match=f"joblib_backend '{backend}' needs"):
        tiny_features(split, joblib_backend=backend, n_jobs=2)
