"""fisher-sift: Fisher vector formulas against a per-descriptor reference, the posteriors
against scikit-learn, normalisation and dimensions, caching, and an end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.baselines import fisher as F
from cvbench.errors import UserError
from cvbench.methods import create_method, get_method_spec
from tests.test_bow import _stripes


def _model(K=3, D=4, seed=0) -> F.FisherModel:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, K)
    return F.FisherModel(
        mean=np.zeros(D, np.float32), components=np.eye(D, dtype=np.float32),
        weights=(w / w.sum()).astype(np.float32), means=rng.normal(size=(K, D)).astype(np.float32),
        sigmas=rng.uniform(0.5, 2.0, (K, D)).astype(np.float32))


def _reference_fv(Z, m: F.FisherModel) -> np.ndarray:
    """Textbook improved FV, one descriptor and one Gaussian at a time (float64)."""
    K, D = m.means.shape
    Z = Z.astype(np.float64)
    logp = np.zeros((len(Z), K))
    for i, z in enumerate(Z):
        for k in range(K):
            s = m.sigmas[k].astype(np.float64)
            logp[i, k] = (np.log(m.weights[k]) - np.log(s).sum() - 0.5 * (((z - m.means[k]) / s) ** 2).sum())
    g = np.exp(logp - logp.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    gm, gs = np.zeros((K, D)), np.zeros((K, D))
    for i, z in enumerate(Z):
        for k in range(K):
            u = (z - m.means[k]) / m.sigmas[k]
            gm[k] += g[i, k] * u
            gs[k] += g[i, k] * (u * u - 1)
    gm /= len(Z) * np.sqrt(m.weights)[:, None]
    gs /= len(Z) * np.sqrt(2 * m.weights)[:, None]
    v = np.concatenate([gm.ravel(), gs.ravel()])
    v = np.sign(v) * np.sqrt(np.abs(v))
    return v / np.linalg.norm(v)


def test_fisher_cells_match_reference_per_cell():
    m = _model()
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(60, 4)).astype(np.float32)
    cells = rng.integers(0, 3, 60)
    cells[cells == 2] = 0  # cell 2 stays empty
    out = F.fisher_cells(Z, cells, 3, m)
    assert out.shape == (3, m.dim) == (3, 2 * 3 * 4)
    for c in (0, 1):
        np.testing.assert_allclose(out[c], _reference_fv(Z[cells == c], m), rtol=1e-4, atol=1e-6)
    assert not out[2].any()


def test_posteriors_match_sklearn_gmm():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(c, 0.3, (200, 3)) for c in (-1.0, 0.0, 1.5)]).astype(np.float32)
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    m = F.FisherModel(np.zeros(3, np.float32), np.eye(3, dtype=np.float32), gmm.weights_.astype(np.float32),
                      gmm.means_.astype(np.float32), np.sqrt(gmm.covariances_).astype(np.float32))
    P = F.posteriors(X, m)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(P, gmm.predict_proba(X), atol=1e-4)


def test_encode_image_dims_and_norm():
    m = F.FisherModel(np.zeros(128, np.float32), np.eye(8, 128, dtype=np.float32), *(
        lambda k: (np.full(k.shape[0], 1 / k.shape[0], np.float32), k, np.ones_like(k)))(
        np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32) * 0.05))
    rng = np.random.default_rng(4)
    desc = rng.integers(0, 120, (300, 128)).astype(np.uint8)
    frames = np.column_stack([rng.uniform(0, 50, 300), rng.uniform(0, 50, 300), np.full(300, 4)])
    for levels in (0, 1, 2):
        v = F.encode_image(frames, desc, (50, 50), m, rootsift=True, levels=levels)
        assert v.shape == (sum(4**lvl for lvl in range(levels + 1)) * m.dim,)
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)


def test_model_round_trip_and_digest():
    m = _model(seed=5)
    m2 = F.FisherModel.from_bytes(m.to_bytes())
    assert m2.digest() == m.digest()
    for a, b in zip((m.mean, m.components, m.weights, m.means, m.sigmas),
                    (m2.mean, m2.components, m2.weights, m2.means, m2.sigmas)):
        np.testing.assert_array_equal(a, b)
    assert _model(seed=6).digest() != m.digest()


def test_fit_model_checks_sizes():
    X = np.random.default_rng(0).random((50, 128), dtype=np.float32)
    with pytest.raises(UserError):
        F.fit_fisher_model(X, pca_dim=200, n_components=4)
    with pytest.raises(UserError):
        F.fit_fisher_model(X, pca_dim=16, n_components=64)


def test_registered_and_end_to_end_on_stripes(tmp_path, monkeypatch):
    monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / "cache"))
    spec = get_method_spec("fisher-sift")
    assert spec.family == "classical" and spec.params()["rootsift"] is True
    train, test = _stripes(8, 0), _stripes(6, 1)
    params = dict(step=4, bin_size=3, backend="numpy", pca_dim=16, n_components=4, vocab_sample=3000,
                  pyramid_levels=1, C=1.0, n_jobs=1)
    m = create_method("fisher-sift", **params).fit(train)
    acc = float((m.predict(test) == test.labels).mean())
    assert acc >= 0.9, acc
    assert m.info_["feature_dim"] == 5 * 2 * 4 * 16 and m.info_["model_cache_hit"] is False
    m2 = create_method("fisher-sift", **params).fit(train)  # model and encodings from the cache
    assert m2.info_["model_cache_hit"] and m2.info_["train_encoding_cache_hit"]
    np.testing.assert_array_equal(m2.predict_scores(test), m.predict_scores(test))


@pytest.mark.parametrize("levels", [0, 1, 2])
def test_encode_image_equals_cells_encoded_level_by_level(levels):
    """encode_image computes posteriors once and sums child cells into parents: the same vector
    as encoding every level's cells separately from the descriptors (the textbook reference)."""
    m = _model(K=4, D=6, seed=8)
    m = F.FisherModel(np.zeros(128, np.float32), np.eye(6, 128, dtype=np.float32) * 3,
                      m.weights, m.means * 0.1, m.sigmas * 0.1)
    rng = np.random.default_rng(9)
    desc = rng.integers(0, 90, (140, 128)).astype(np.uint8)
    desc[5] = 0  # an all-zero descriptor
    frames = np.column_stack([rng.uniform(0, 40, 140), rng.uniform(0, 30, 140), np.full(140, 4)])
    frames[:20, 0] = rng.uniform(0, 9, 20)  # crowd one corner; leave level-2 cells empty
    frames[:20, 1] = rng.uniform(0, 7, 20)
    frames[20:, 0] = rng.uniform(20, 40, 120)
    v = F.encode_image(frames, desc, (30, 40), m, rootsift=True, levels=levels)
    Z = m.project(F.transform_descriptors(desc, True))
    parts = []
    for lvl, cells in enumerate(F.pyramid_cells(frames[:, :2], (30, 40), levels)):
        for c in range(4**lvl):
            sel = cells == c
            parts.append(_reference_fv(Z[sel], m) if sel.any() else np.zeros(m.dim))
    want = np.concatenate(parts) / np.sqrt(sum(4**lvl for lvl in range(levels + 1)))
    np.testing.assert_allclose(v, want, rtol=1e-4, atol=1e-6)
