"""`fisher-sift`: dense SIFT -> PCA -> diagonal GMM -> improved Fisher vectors -> linear SVM.

The encoding of Perronnin, Sánchez & Mensink (ECCV 2010, "improved Fisher kernel"), in the
setting Chatfield et al. (BMVC 2011, "The devil is in the details") found strongest among
bag-of-words encodings: dense SIFT reduced to ``pca_dim`` dimensions by PCA, a diagonal-
covariance GMM of ``n_components`` Gaussians fitted on a seeded descriptor sample, and per
image (and per spatial-pyramid cell) the gradients of the log-likelihood with respect to the
means and standard deviations:

    G_mu_k    = 1 / (n sqrt(w_k))    sum_i g_ik (x_i - mu_k) / sigma_k
    G_sigma_k = 1 / (n sqrt(2 w_k))  sum_i g_ik [((x_i - mu_k) / sigma_k)^2 - 1]

(g_ik the posterior of Gaussian k for descriptor i, n the cell's descriptor count), each
cell's vector (2 K D values) power-normalised (signed square root) and L2-normalised, the
cells concatenated and divided by sqrt(number of cells) so the image vector has unit norm;
then a one-vs-rest linear SVM. Spatial cells follow Lazebnik's grid (level l: 2^l x 2^l),
unweighted, as in Chatfield et al.

Everything before the encoding is bow-sift's: the same dense SIFT backends and descriptor
store, the same seeded per-image vocabulary sample on the ``vocab_step`` grid
(baselines.bow.sample_descriptors). Caches: the PCA + GMM model in ``cache_dir("vocab")``
(npz), the Fisher vectors in ``cache_dir("fisher")``, both keyed by split + parameters.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cvbench.atomic import atomic_write_bytes
from cvbench.cache import CORRUPT, discard, note
from cvbench.errors import UserError
from cvbench.methods import Method, Scores, register_method
from cvbench.paths import cache_dir

from . import params
from .bow import (
    DescriptorStore,
    _extract,
    _limit_threads,
    cached_matrix,
    encode_images,
    sample_descriptors,
)
from .classifiers import make_classifier
from .sift import SiftParams, make_sift_params, transform_descriptors
from .vocab import digest, vocab_key

_MIN_SIGMA2 = 1e-4  # variance floor of the GMM (PCA'd unit-norm SIFT has variances ~1e-3..1e-1)


@dataclass(frozen=True)
class FisherModel:
    """PCA (mean (128,), components (D, 128)) + diagonal GMM (weights (K,), means and
    standard deviations (K, D))."""

    mean: np.ndarray
    components: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    sigmas: np.ndarray

    @property
    def dim(self) -> int:
        """Length of one cell's Fisher vector: 2 K D."""
        return 2 * self.means.size

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components, weights=self.weights,
                 means=self.means, sigmas=self.sigmas)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> FisherModel:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return cls(*(np.asarray(z[k], dtype=np.float32)
                         for k in ("mean", "components", "weights", "means", "sigmas")))

    def digest(self) -> str:
        return digest(np.concatenate([a.ravel() for a in (self.mean, self.components, self.weights,
                                                            self.means, self.sigmas)]))

    def project(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float32) - self.mean) @ self.components.T


def fit_fisher_model(X: np.ndarray, pca_dim: int, n_components: int, seed: int = 0,
                     n_iter: int = 100) -> FisherModel:
    """PCA to pca_dim dims, then a diagonal GMM (k-means initialised, scikit-learn EM)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, np.float32)
    if len(X) < max(n_components, pca_dim):
        raise UserError(f"a {n_components}-component GMM on {pca_dim} PCA dims needs at least "
                        f"{max(n_components, pca_dim)} descriptors, got {len(X)}")
    if not 1 <= pca_dim <= X.shape[1]:
        raise UserError(f"pca_dim must be in 1..{X.shape[1]}, got {pca_dim}")
    from cvbench import progress

    with threadpool_limits(1), progress.stage(
            f"vocabulary: PCA to {pca_dim} dims + {n_components}-component GMM on {len(X)} descriptors"):
        pca = PCA(n_components=int(pca_dim), random_state=int(seed)).fit(X)
        Z = pca.transform(X).astype(np.float32)
        gmm = GaussianMixture(n_components=int(n_components), covariance_type="diag",
                              max_iter=int(n_iter), reg_covar=_MIN_SIGMA2 * Z.var(axis=0).mean(),
                              random_state=int(seed)).fit(Z)
    return FisherModel(mean=pca.mean_.astype(np.float32), components=pca.components_.astype(np.float32),
                       weights=gmm.weights_.astype(np.float32), means=gmm.means_.astype(np.float32),
                       sigmas=np.sqrt(gmm.covariances_).astype(np.float32))


def _stacked(Z: np.ndarray) -> np.ndarray:
    """[z, z^2] per row (n, 2D) float64: what the posteriors and the cell statistics need."""
    Z = np.asarray(Z, np.float64)
    out = np.empty((len(Z), 2 * Z.shape[1]), np.float64)
    D = Z.shape[1]
    out[:, :D] = Z
    np.multiply(Z, Z, out=out[:, D:])
    return out


def _posteriors_stacked(ZZ: np.ndarray, model: FisherModel) -> np.ndarray:
    """posteriors() from [z, z^2] rows: one GEMM for the quadratic form of every Gaussian."""
    inv = 1.0 / (model.sigmas.astype(np.float64) ** 2)  # (K, D)
    mu = model.means.astype(np.float64)
    B = np.concatenate([-2.0 * mu * inv, inv], axis=1)  # (K, 2D)
    # log N(z; mu_k, diag sigma_k^2) up to the shared -D/2 log(2 pi)
    ll = ZZ @ B.T
    ll += (mu * mu * inv).sum(1)[None, :]
    ll *= -0.5
    ll += (np.log(np.maximum(model.weights, 1e-12)) - np.log(model.sigmas).sum(1))[None, :]
    ll -= ll.max(axis=1, keepdims=True)
    np.exp(ll, out=ll)
    ll /= ll.sum(axis=1, keepdims=True)
    return ll


def posteriors(Z: np.ndarray, model: FisherModel) -> np.ndarray:
    """(n, K) posteriors of the GMM components for projected descriptors Z (n, D)."""
    return _posteriors_stacked(_stacked(Z), model)


def _cell_statistics(ZZ: np.ndarray, G: np.ndarray, cells: np.ndarray, n_cells: int,
                     presorted: bool = False):
    """Per cell: descriptor count (n_cells,), posterior sums s0 (n_cells, K) and posterior-weighted
    sums of [z, z^2] (n_cells, K, 2D), one GEMM per non-empty cell on rows sorted by cell
    (`presorted`: the rows already are)."""
    K = G.shape[1]
    counts = np.bincount(cells, minlength=n_cells)
    s0 = np.zeros((n_cells, K))
    s12 = np.zeros((n_cells, K, ZZ.shape[1]))
    if not presorted and n_cells > 1:
        order = np.argsort(cells, kind="stable")
        G, ZZ = G[order], ZZ[order]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for c in np.flatnonzero(counts):
        a, b = bounds[c], bounds[c + 1]
        s0[c] = G[a:b].sum(0)
        s12[c] = G[a:b].T @ ZZ[a:b]
    return counts, s0, s12


def _fisher_from_statistics(counts, s0, s12, model: FisherModel) -> np.ndarray:
    """Improved Fisher vector per cell from its statistics (see fisher_cells), float32."""
    K, D = model.means.shape
    out = np.zeros((len(counts), 2 * K * D), np.float32)
    mu = model.means.astype(np.float64)
    sig = model.sigmas.astype(np.float64)
    w = model.weights.astype(np.float64)
    for c in np.flatnonzero(counts):
        n = int(counts[c])
        s0c = s0[c][:, None]  # (K, 1)
        s1, s2 = s12[c][:, :D], s12[c][:, D:]
        g_mu = (s1 - s0c * mu) / sig / (n * np.sqrt(w)[:, None])
        g_sig = ((s2 - 2 * mu * s1 + s0c * mu * mu) / (sig * sig) - s0c) / (n * np.sqrt(2 * w)[:, None])
        v = np.concatenate([g_mu.ravel(), g_sig.ravel()])
        v = np.sign(v) * np.sqrt(np.abs(v))
        out[c] = v / max(np.linalg.norm(v), 1e-12)
    return out


def fisher_cells(Z: np.ndarray, cells: np.ndarray, n_cells: int, model: FisherModel) -> np.ndarray:
    """Improved Fisher vector of each cell, (n_cells, 2 K D) float32, each row power- and
    L2-normalised (an empty cell is all zeros)."""
    if len(Z) == 0:
        return np.zeros((n_cells, model.dim), np.float32)
    ZZ = _stacked(Z)
    G = _posteriors_stacked(ZZ, model)
    return _fisher_from_statistics(*_cell_statistics(ZZ, G, np.asarray(cells), n_cells), model)


def pyramid_cells(xy: np.ndarray, shape: tuple[int, int], levels: int) -> list[np.ndarray]:
    """Per pyramid level, each descriptor's cell index in Lazebnik's 2^l x 2^l grid."""
    h, w = shape
    out = []
    for lvl in range(int(levels) + 1):
        g = 2**lvl
        cx = np.clip((xy[:, 0] * g / w).astype(np.int64), 0, g - 1)
        cy = np.clip((xy[:, 1] * g / h).astype(np.int64), 0, g - 1)
        out.append(cy * g + cx)
    return out


def encode_image(frames: np.ndarray, desc: np.ndarray, shape: tuple[int, int], model: FisherModel,
                 rootsift: bool, levels: int) -> np.ndarray:
    """The image's Fisher vector: cells of levels 0..L concatenated, unit L2 norm overall.

    The posteriors are computed once for all levels, and the statistics once, at the finest
    level: a coarser cell's are the sums of its four children's (Lazebnik's cells nest)."""
    L = int(levels)
    n_cells = sum(4**lvl for lvl in range(L + 1))
    if len(desc) == 0:
        return np.zeros(n_cells * model.dim, np.float32)
    fine = pyramid_cells(frames[:, :2], shape, L)[L]
    order = np.argsort(fine, kind="stable")  # descriptors grouped by cell
    fine, desc = fine[order], np.asarray(desc)[order]
    ZZ = _stacked(model.project(transform_descriptors(desc, rootsift)))
    G = _posteriors_stacked(ZZ, model)
    counts, s0, s12 = _cell_statistics(ZZ, G, fine, 4**L, presorted=True)
    parts = [None] * (L + 1)
    parts[L] = _fisher_from_statistics(counts, s0, s12, model).ravel()
    for lvl in range(L - 1, -1, -1):  # parent (cy, cx) of child (2 cy + a, 2 cx + b)
        g = 2**lvl
        kids = [(2 * cy + a) * 2 * g + 2 * cx + b for cy in range(g) for cx in range(g)
                for a in (0, 1) for b in (0, 1)]
        counts = counts[kids].reshape(g * g, 4).sum(1)
        s0 = s0[kids].reshape(g * g, 4, *s0.shape[1:]).sum(1)
        s12 = s12[kids].reshape(g * g, 4, *s12.shape[1:]).sum(1)
        parts[lvl] = _fisher_from_statistics(counts, s0, s12, model).ravel()
    return np.concatenate(parts) / np.float32(np.sqrt(n_cells))


def _encode_batch(split, idx, p: SiftParams, store_path, model: FisherModel, rootsift: bool,
                  levels: int, keep: bool = False):
    store = DescriptorStore(store_path, p) if store_path else None
    out, kept, n_desc = [], [], 0
    with _limit_threads():
        for i in idx:
            frames, desc, shape = store.get(i) if store else _extract(split, i, p)
            out.append(encode_image(frames, desc, shape, model, rootsift, levels))
            if keep:
                kept.append((desc, shape))
            n_desc += len(frames)
    return out, n_desc, kept


def encode_split(split, p: SiftParams, model: FisherModel, rootsift: bool, levels: int,
                 n_jobs=None, joblib_backend: str = "loky") -> tuple[np.ndarray, bool]:
    """Fisher vectors of a split (n, cells x 2KD) float32, cached; returns (matrix, cache hit)."""
    key = vocab_key(split=split.cache_key, sift=p.key(), model=model.digest(), rootsift=rootsift,
                    levels=int(levels))

    def compute() -> np.ndarray:
        rows = encode_images(split, p, _encode_batch, (model, rootsift, levels), n_jobs,
                             joblib_backend, stage="Fisher vectors")
        n_cells = sum(4**lvl for lvl in range(int(levels) + 1))
        return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, n_cells * model.dim), np.float32)

    return cached_matrix(cache_dir("fisher") / f"{key}.npy", compute, "Fisher vectors")


@register_method(
    "fisher-sift", family="classical",
    description="Dense SIFT + PCA + diagonal GMM -> improved Fisher vectors (+ spatial cells) + linear SVM",
)
class FisherSift(Method):
    """Improved Fisher vectors of dense SIFT with a spatial pyramid and a linear SVM."""

    parameters = {**params.SIFT, **params.FISHER, **params.RUNTIME}

    def __init__(
        self,
        step: int = 4,
        bin_size: int = 4,
        scales: Any = None,
        backend: str = "auto",
        smooth: bool | None = None,
        rootsift: bool = True,
        pca_dim: int = 64,
        n_components: int = 64,
        vocab_sample: int = 100_000,
        vocab_step: int = 4,
        gmm_iter: int = 100,
        pyramid_levels: int = 1,
        C: float = 1.0,
        max_side: int | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
        joblib_backend: str = "loky",
    ):
        self.step = step
        self.bin_size = bin_size
        self.scales = scales
        self.backend = backend
        self.smooth = smooth
        self.rootsift = rootsift
        self.pca_dim = pca_dim
        self.n_components = n_components
        self.vocab_sample = vocab_sample
        self.vocab_step = vocab_step
        self.gmm_iter = gmm_iter
        self.pyramid_levels = pyramid_levels
        self.C = C
        self.max_side = max_side
        self.seed = seed
        self.n_jobs = n_jobs
        self.joblib_backend = joblib_backend

    def _model(self, split, p: SiftParams) -> tuple[FisherModel, bool, dict[str, float]]:
        pv = replace(p, step=max(p.step, int(self.vocab_step)))
        key = vocab_key(kind="fisher", train=split.cache_key, sift=pv.key(), rootsift=bool(self.rootsift),
                        pca=int(self.pca_dim), k=int(self.n_components), sample=int(self.vocab_sample),
                        iters=int(self.gmm_iter), seed=int(self.seed))
        path = cache_dir("vocab") / f"{key}.npz"
        if path.is_file():
            try:
                model = FisherModel.from_bytes(path.read_bytes())
                note("vocabulary", hit=True)
                return model, True, {}
            except CORRUPT as exc:
                discard(path, exc)
        note("vocabulary", hit=False)
        t0 = time.perf_counter()
        sample, _ = sample_descriptors(split, pv, int(self.vocab_sample), int(self.seed), self.n_jobs,
                                       self.joblib_backend, build_store=pv.step == p.step)
        t1 = time.perf_counter()
        model = fit_fisher_model(transform_descriptors(sample, bool(self.rootsift)), int(self.pca_dim),
                                 int(self.n_components), int(self.seed), int(self.gmm_iter))
        atomic_write_bytes(path, model.to_bytes())
        return model, False, {"sample_s": round(t1 - t0, 3), "gmm_s": round(time.perf_counter() - t1, 3)}

    def fit(self, split):
        t_start = time.perf_counter()
        p = make_sift_params(self.step, self.bin_size, self.scales, self.backend, self.smooth,
                             0.0, self.max_side)
        self.sift_params_ = p
        t0 = time.perf_counter()
        self.model_, hit, model_t = self._model(split, p)
        model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        H, enc_hit = self.transform(split, with_hit=True)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.clf_ = make_classifier("linear-svm", C=float(self.C), seed=int(self.seed))
        self.clf_.fit(H, split.labels, n_classes=split.n_classes)
        self.info_ = {
            "backend": p.backend,
            "sift": p.key(),
            "model_cache_hit": hit,
            "feature_dim": int(H.shape[1]),
            "train_encoding_cache_hit": enc_hit,
            "classifier": self.clf_.info(),
            "timings": {**model_t, "model_s": round(model_s, 3), "encode_s": round(encode_s, 3),
                        "classify_s": round(time.perf_counter() - t0, 3),
                        "fit_total_s": round(time.perf_counter() - t_start, 3)},
            "n_jobs": self.n_jobs,
        }
        return self

    def transform(self, split, with_hit: bool = False):
        """Fisher vectors of a split with the fitted model (cached)."""
        H, hit = encode_split(split, self.sift_params_, self.model_, bool(self.rootsift),
                              int(self.pyramid_levels), self.n_jobs, self.joblib_backend)
        return (H, hit) if with_hit else H

    def predict_scores(self, split) -> Scores:
        t0 = time.perf_counter()
        H = self.transform(split)
        t1 = time.perf_counter()
        scores = self.clf_.decision_scores(H)
        return Scores(scores, info={"timings": {"test_encode_s": round(t1 - t0, 3),
                                                "test_classify_s": round(time.perf_counter() - t1, 3)}})
