"""bow-sift end to end: synthetic textures (fast, cache behaviour) and a small real scene15 run."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.baselines.bow import BowSift, sample_descriptors
from cvbench.baselines.encode import pyramid_dim
from cvbench.baselines.sift import make_sift_params
from cvbench.errors import UserError
from cvbench.methods import create_method, get_method_spec
from cvbench.split import Split, per_class_limit
from tests.conftest import task_data


def _stripes(n_per_class: int, seed: int) -> Split:
    """Two classes of 48x64 images: horizontal vs vertical noisy stripes (in memory)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]
    imgs, labels = [], []
    for c in range(2):
        for _ in range(n_per_class):
            period = rng.uniform(6, 12)
            phase = rng.uniform(0, 2 * np.pi)
            coord = yy if c == 0 else xx
            img = 128 + 80 * np.sin(2 * np.pi * coord / period + phase) + rng.normal(0, 20, yy.shape)
            imgs.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return Split(items=np.stack(imgs), labels=np.array(labels), classes=("horizontal", "vertical"),
                 name=f"stripes/{seed}")


def test_registered_with_plain_params():
    spec = get_method_spec("bow-sift")
    assert spec.family == "classical"
    params = spec.params()
    for name in ("step", "bin_size", "scales", "backend", "rootsift", "vocab_size", "vocab_sample",
                 "kmeans", "encoding", "hist_norm", "pyramid_levels", "classifier", "k", "metric",
                 "C", "kernel_mode", "max_side", "seed", "n_jobs", "joblib_backend"):
        assert name in params, name
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in params.values())
    with pytest.raises(UserError):
        create_method("bow-sift", vocab_words=3)


@pytest.mark.parametrize("classifier,levels", [("knn", 0), ("linear-svm", 1), ("hik-svm", 2)])
def test_stripes_end_to_end_and_caches(classifier, levels):
    train, test = _stripes(12, 0), _stripes(8, 1)
    kw = dict(step=6, bin_size=3, vocab_size=16, vocab_sample=3000, classifier=classifier, k=3,
              pyramid_levels=levels, n_jobs=1, backend="opencv")
    m = BowSift(**kw).fit(train)
    acc = (m.predict(test) == test.labels).mean()
    assert acc >= 0.85, acc
    info = m.info_
    assert info["backend"] == "opencv" and info["feature_dim"] == pyramid_dim(16, levels)
    assert {"vocab_s", "encode_s", "classify_s"} <= set(info["timings"])
    # second fit: vocabulary and histograms come from the cache and give the same scores
    m2 = BowSift(**kw).fit(train)
    assert m2.info_["vocab_cache_hit"] and m2.info_["train"]["hist_cache_hit"]
    np.testing.assert_array_equal(m2.centres_, m.centres_)
    np.testing.assert_allclose(m2.predict_scores(test), m.predict_scores(test))


def test_training_histograms_sum_to_one():
    train = _stripes(5, 2)
    m = BowSift(step=8, bin_size=3, vocab_size=8, vocab_sample=500, pyramid_levels=1, n_jobs=1,
                backend="opencv").fit(train)
    H = m.transform(train)
    assert H.shape == (10, pyramid_dim(8, 1))
    np.testing.assert_allclose(H.sum(1), 1.0, rtol=1e-5)


def test_vocab_sample_same_with_and_without_descriptor_cache(monkeypatch):
    split = _stripes(4, 3)
    p = make_sift_params(step=5, bin_size=3, backend="opencv")
    monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", "0")  # no store: extract on the fly
    a, stored_a = sample_descriptors(split, p, 200, seed=7, n_jobs=1)
    monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", "1")
    b, stored_b = sample_descriptors(split, p, 200, seed=7, n_jobs=1)
    assert not stored_a and stored_b
    assert len(a) == 200
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rootsift,scales", [(False, None), (True, "3,5")])
def test_words_same_from_descriptor_store_and_fused_extraction(monkeypatch, tmp_path, rootsift, scales):
    """numpy backend: words assigned block by block during extraction (no store) equal those
    from the stored uint8 descriptors, so histograms never depend on the cache state."""
    from cvbench.baselines.bow import encode_split
    from cvbench.baselines.sift import dense_sift, transform_descriptors
    from cvbench.baselines.vocab import kmeans

    split = _stripes(3, 11)
    p = make_sift_params(step=2, bin_size=3, scales=scales, backend="numpy")
    sample = np.vstack([dense_sift(split.image(i, "gray"), p)[1][::7] for i in range(len(split))])
    centres = kmeans(transform_descriptors(sample, rootsift), 12, "sklearn", 0, 10)
    enc = {"rootsift": rootsift, "encoding": "hard", "sigma": None, "levels": 1, "hist_norm": "l1"}
    out = {}
    for gb in ("0", "1"):
        monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", gb)
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"cache{gb}"))
        out[gb] = encode_split(split, p, centres, enc, n_jobs=1)
    assert out["0"][1]["desc_cache"] is False and out["1"][1]["desc_cache"] is True
    np.testing.assert_array_equal(out["0"][0], out["1"][0])


@pytest.mark.realdata
def test_scene15_small_subset_well_above_chance(real_data):
    from cvbench.tasks.scene15.reader import read as read_scene15

    train, test = read_scene15(task_data(real_data, "scene15"))
    train, test = per_class_limit(train, 20, seed=0), per_class_limit(test, 10, seed=0)
    m = BowSift(step=8, vocab_size=100, vocab_sample=20_000, classifier="linear-svm",
                hist_norm="sqrt", n_jobs=2).fit(train)
    acc = float((m.predict(test) == test.labels).mean())
    assert acc > 0.35, acc  # chance is 1/15 = 0.067


@pytest.mark.parametrize("backend", ["numpy", "opencv"])
def test_descriptor_store_gives_back_dense_sift(backend):
    """The store keeps descriptors and shapes only; what it gives back (frames rebuilt from the
    shape) is dense_sift's output, image by image."""
    from cvbench.baselines.bow import open_store
    from cvbench.baselines.sift import dense_sift

    split = _stripes(3, 12)
    p = make_sift_params(step=4, bin_size=3, scales="3,5", backend=backend)
    store = open_store(split, p, n_jobs=1)
    assert store is not None and not (store.path / "frames.f32").exists()
    for i in range(len(split)):
        frames, desc, shape = store.get(i)
        want = dense_sift(split.image(i, "gray"), p)
        np.testing.assert_array_equal(frames, want[0])
        np.testing.assert_array_equal(desc, want[1])
        assert shape == want[2]


def test_encoding_writes_the_store_and_a_rerun_reads_it(tmp_path, monkeypatch):
    """Encoding a split with no store extracts each image once (in the workers), encodes it
    and writes the store from the same descriptors; encoding again from that store gives the
    same histograms, as does a vocabulary sample read from it."""
    from cvbench.baselines.bow import encode_split
    from cvbench.baselines.sift import dense_sift, transform_descriptors
    from cvbench.baselines.vocab import kmeans

    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    split = _stripes(4, 13)
    p = make_sift_params(step=3, bin_size=3, backend="numpy")
    sample = np.vstack([dense_sift(split.image(i, "gray"), p)[1][::5] for i in range(len(split))])
    centres = kmeans(transform_descriptors(sample, False), 10, "sklearn", 0, 10)
    enc = {"rootsift": False, "encoding": "hard", "sigma": None, "levels": 1, "hist_norm": "l1"}
    H1, info1 = encode_split(split, p, centres, enc, n_jobs=2)
    assert info1["desc_cache"] and not info1["store_hit"]
    H2, info2 = encode_split(split, p, centres[::-1].copy(), enc, n_jobs=1)  # another vocabulary
    assert info2["store_hit"] and not info2["hist_cache_hit"]
    H3, _ = encode_split(split, p, centres[::-1].copy(), enc, n_jobs=1)
    np.testing.assert_array_equal(H2, H3)
    # the reversed vocabulary permutes the words: the same histograms up to that permutation
    K = len(centres)
    np.testing.assert_allclose(H1[:, :K], H2[:, :K][:, ::-1], rtol=1e-6)
    a, hit = sample_descriptors(split, p, 100, seed=3, n_jobs=1)
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "elsewhere"))
    b, built = sample_descriptors(split, p, 100, seed=3, n_jobs=2)
    monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", "0")
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "none"))
    c, none = sample_descriptors(split, p, 100, seed=3, n_jobs=2)
    assert hit and built and not none
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_store_budget_follows_free_disk_space(monkeypatch, tmp_path):
    """Default budget: a quarter of the free space (2..32 GiB), so a large split keeps its store
    and is extracted once (the fit's cost per image stays flat with N); the variable overrides
    it."""
    import shutil

    from cvbench.baselines import bow

    monkeypatch.delenv("CVBENCH_SIFT_CACHE_GB", raising=False)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=100 * 2**30))
    assert bow._cache_budget_bytes(tmp_path) == 25 * 2**30
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=2**30))
    assert bow._cache_budget_bytes(tmp_path) == 2 * 2**30
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000 * 2**30))
    assert bow._cache_budget_bytes(tmp_path) == 32 * 2**30
    monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", "0.5")
    assert bow._cache_budget_bytes(tmp_path) == 0.5 * 2**30


def test_fit_and_predict_extract_each_image_once(tmp_path, monkeypatch):
    """A cold fit extracts every training image once (vocabulary sample and encoding share the
    store) and a prediction every test image once; with no room for a store the fit extracts
    twice (the cost the store budget exists to avoid)."""
    from cvbench.baselines import bow

    calls = []
    real = bow.dense_sift_blocks

    def counting_blocks(img, p, keep_bytes=False):
        calls.append("blocks")
        return real(img, p, keep_bytes)

    real_extract = bow._extract

    def counting_extract(split, i, p):
        calls.append("extract")
        return real_extract(split, i, p)

    monkeypatch.setattr(bow, "dense_sift_blocks", counting_blocks)
    monkeypatch.setattr(bow, "_extract", counting_extract)
    train, test = _stripes(6, 14), _stripes(4, 15)
    kw = dict(step=6, bin_size=3, vocab_size=8, vocab_sample=500, vocab_step=6, n_jobs=1, backend="numpy")
    for gb, per_image in (("4", 1), ("0", 2)):
        monkeypatch.setenv("CVBENCH_SIFT_CACHE_GB", gb)
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / gb))
        calls.clear()
        m = BowSift(**kw).fit(train)
        assert len(calls) == per_image * len(train), (gb, calls)
        calls.clear()
        m.predict_scores(test)
        assert len(calls) == len(test), (gb, calls)
