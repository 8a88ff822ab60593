"""Tiny-image features (Torralba et al. 2008) and the `tiny-knn` / `tiny-svm` methods.

Public API:

    tiny_features(split, size=16, crop=False, zero_mean=True, norm="l1", n_jobs=None,
                  joblib_backend="loky", cache=True) -> float32 (n, size * size)
        Each image in grayscale, optionally centre-cropped to a square, resized to size x size
        with cv2.INTER_AREA, flattened, optionally made zero-mean, then normalised ("none",
        "l1", "l2"). Path splits decode in parallel with joblib (backend "loky", "threading",
        "multiprocessing", "dask" or "ray"; the last two need their packages and a cluster
        client); in-memory uint8 splits (CIFAR arrays, RGB or gray) resize in-process. The
        resized images (before normalisation) are cached on disk under cache_dir("tiny") keyed
        by split.fingerprint + size + crop, and in memory, so a k-sweep never re-decodes.
    tiny_images(split, size, crop, ...) -> float32 (n, size, size): the cached resized images.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from cvbench.cache import CORRUPT, CacheCorrupt, discard, note
from cvbench.errors import UserError
from cvbench.methods import Method, Scores, register_method
from cvbench.split import Split

from . import params
from .classifiers import make_classifier
from .knn import NEIGHBOUR_CACHE
from .params import JOBLIB_BACKENDS, NORMS

_CACHE_VERSION = 1
_MEM_ENTRIES = 8  # resized-image sets kept in memory per process

_mem_cache: dict[str, np.ndarray] = {}
_mem_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def _resize(img: np.ndarray, size: int, crop: bool) -> np.ndarray:
    """uint8 gray (H, W) -> float32 (size, size): centre square crop (optional), area resize."""
    import cv2

    if crop:
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    return cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def _tiny_batch(paths: list[str], size: int, crop: bool) -> np.ndarray:
    """Decode and shrink a batch of image files (runs in a joblib worker)."""
    from cvbench.images import load_image

    out = np.empty((len(paths), size, size), dtype=np.float32)
    for j, p in enumerate(paths):
        out[j] = _resize(load_image(p, mode="gray"), size, crop)
    return out


def _check_backend(backend: str) -> None:
    if backend not in JOBLIB_BACKENDS:
        raise UserError(
            f"unknown joblib_backend {backend!r}; valid: {', '.join(JOBLIB_BACKENDS)}"
        )
    try:
        if backend == "ray":
            from ray.util.joblib import register_ray

            register_ray()
        elif backend == "dask":
            import distributed  # noqa: F401  (registers joblib's "dask" backend)
    except ImportError:
        pkg = "ray" if backend == "ray" else "dask[distributed]"
        raise UserError(
            f"joblib_backend {backend!r} needs the {pkg} package (pip install {pkg!r})"
        ) from None


def _decode_parallel(paths: np.ndarray, size: int, crop: bool, n_jobs: int | None,
                     backend: str) -> np.ndarray:
    from joblib import Parallel, delayed, effective_n_jobs, parallel_config

    from cvbench import progress
    from cvbench.parallel import map_batches, scheduler_address

    desc = f"tiny images {size}x{size}"
    paths = [str(p) for p in paths]
    if scheduler_address() and len(paths) >= 64:  # a Dask cluster (cvbench.parallel)
        bounds = np.linspace(0, len(paths), min(len(paths) // 16, 256) + 1).astype(int)
        chunks = [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return np.concatenate(list(map_batches(_tiny_batch, chunks, (size, crop), desc=desc)))
    with parallel_config(backend=backend, n_jobs=n_jobs):
        jobs = effective_n_jobs()
        if jobs == 1 or len(paths) < 64:
            return _tiny_batch(paths, size, crop)
        n_batches = min(len(paths), 16 * jobs)  # small enough batches for the bar to move
        bounds = np.linspace(0, len(paths), n_batches + 1).astype(int)
        parts = []
        with progress.bar(len(paths), desc) as bar:
            for part in Parallel(return_as="generator")(
                delayed(_tiny_batch)(paths[a:b], size, crop) for a, b in zip(bounds[:-1], bounds[1:])
            ):
                parts.append(part)
                bar.update(len(part))
    return np.concatenate(parts)


def tiny_images(
    split: Split,
    size: int = 16,
    crop: bool = False,
    n_jobs: int | None = None,
    joblib_backend: str = "loky",
    cache: bool = True,
) -> np.ndarray:
    """float32 (n, size, size) grayscale thumbnails of every item (cached, see module doc)."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise UserError(f"tiny-image size must be a positive integer, got {size!r}")
    _check_backend(joblib_backend)
    key = f"{split.cache_key}-s{int(size)}-c{int(bool(crop))}-v{_CACHE_VERSION}"
    if cache:
        with _mem_lock:
            hit = _mem_cache.get(key)
        if hit is None:
            hit = _load_disk(key, len(split), size)
            if hit is not None:
                with _mem_lock:
                    _mem_cache[key] = hit
        if hit is not None:
            _stats["hits"] += 1
            note("tiny images", hit=True, n=len(split))
            return hit
    _stats["misses"] += 1
    note("tiny images", hit=False, n=len(split))
    if len(split) == 0:
        out = np.zeros((0, size, size), np.float32)
    elif split.in_memory:
        out = np.stack([_resize(split.image(i, "gray"), size, crop) for i in range(len(split))])
    else:
        out = _decode_parallel(split.items, size, crop, n_jobs, joblib_backend)
    out.setflags(write=False)
    if cache:
        _save_disk(key, out)
        with _mem_lock:
            _mem_cache[key] = out
            while len(_mem_cache) > _MEM_ENTRIES:
                _mem_cache.pop(next(iter(_mem_cache)))
    return out


def _disk_path(key: str):
    from cvbench.paths import cache_dir

    return cache_dir("tiny") / f"{key}.npy"


def _load_disk(key: str, n: int, size: int) -> np.ndarray | None:
    path = _disk_path(key)
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
        if arr.shape != (n, size, size) or arr.dtype != np.float32:
            raise CacheCorrupt(f"shape {arr.shape} {arr.dtype}, expected {(n, size, size)} float32")
    except CORRUPT as exc:
        discard(path, exc)
        return None
    arr.setflags(write=False)
    return arr


def _save_disk(key: str, arr: np.ndarray) -> None:
    from cvbench.atomic import atomic_open

    try:
        with atomic_open(_disk_path(key), "wb") as f:
            np.save(f, arr, allow_pickle=False)
    except OSError:  # a read-only cache is not an error
        pass


def normalise(X: np.ndarray, zero_mean: bool = True, norm: str = "l1") -> np.ndarray:
    """Row-wise: subtract the mean (optional), then scale to unit L1/L2 norm (zero rows stay)."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    X = np.array(X, dtype=np.float32, copy=True)
    if zero_mean:
        X -= X.mean(axis=1, keepdims=True)
    if norm != "none":
        n = np.abs(X).sum(axis=1) if norm == "l1" else np.sqrt((X.astype(np.float64) ** 2).sum(1))
        X /= np.where(n > 0, n, 1.0)[:, None].astype(np.float32)
    return X


def tiny_features(
    split: Split,
    size: int = 16,
    crop: bool = False,
    zero_mean: bool = True,
    norm: str = "l1",
    n_jobs: int | None = None,
    joblib_backend: str = "loky",
    cache: bool = True,
) -> np.ndarray:
    """float32 (n, size*size) tiny-image feature vectors (see module doc)."""
    imgs = tiny_images(split, size, crop, n_jobs=n_jobs, joblib_backend=joblib_backend, cache=cache)
    return normalise(imgs.reshape(len(imgs), -1), zero_mean=zero_mean, norm=norm)


class _TinyBase(Method):
    """Shared fit/predict: tiny features, then a classifier from baselines.classifiers."""

    def _feature_key(self, split: Split) -> str:
        """Names a split's feature matrix (for the k-NN neighbour cache)."""
        return (f"tiny-v{_CACHE_VERSION}:{split.cache_key}:{self.size}:{int(bool(self.crop))}:"
                f"{int(bool(self.zero_mean))}:{self.norm}")

    def _features(self, split: Split) -> tuple[np.ndarray, float, bool]:
        hits0 = _stats["hits"]
        t0 = time.perf_counter()
        X = tiny_features(split, self.size, self.crop, self.zero_mean, self.norm,
                          n_jobs=self.n_jobs, joblib_backend=self.joblib_backend)
        return X, time.perf_counter() - t0, _stats["hits"] > hits0

    def _classifier(self):  # pragma: no cover - interface
        raise NotImplementedError

    def fit(self, split: Split):
        X, extract_s, hit = self._features(split)
        t0 = time.perf_counter()
        clf = self._classifier()
        kw = {"cache_key": self._feature_key(split)} if clf.name == "knn" else {}
        self.clf_ = clf.fit(X, split.labels, n_classes=split.n_classes, **kw)
        self.info_ = {
            "feature_dim": int(X.shape[1]),
            "timings": {"extract_train_s": round(extract_s, 4),
                        "classify_fit_s": round(time.perf_counter() - t0, 4)},
            "cache_hits": {"tiny_train": bool(hit)},
            "classifier": self.clf_.info(),
        }
        return self

    def predict_scores(self, split: Split) -> Scores:
        X, extract_s, hit = self._features(split)
        knn_hits0 = NEIGHBOUR_CACHE.hits
        t0 = time.perf_counter()
        is_knn = getattr(self.clf_, "name", "") == "knn"
        kw = {"cache_key": self._feature_key(split)} if is_knn else {}
        scores = self.clf_.decision_scores(X, **kw)
        train_s = (getattr(self, "info_", {}).get("timings") or {}).get("extract_train_s", 0.0)
        hits = {"tiny_test": bool(hit)}
        if is_knn:
            hits["knn_neighbours"] = NEIGHBOUR_CACHE.hits > knn_hits0
        return Scores(scores, info={
            "timings": {"extract_test_s": round(extract_s, 4),
                        "classify_s": round(time.perf_counter() - t0, 4),
                        "extract_s": round(train_s + extract_s, 4)},
            "cache_hits": hits})


@register_method("tiny-knn", family="classical",
                 description="Tiny grayscale images (16x16, normalised) + k-nearest neighbours")
class TinyKNN(_TinyBase):
    """Tiny grayscale images + k-NN (study: 16x16, zero mean, L1 norm, k=1, L1 metric)."""

    feature_cache_params = ("k", "metric", "weighted")
    parameters = {**params.TINY, **params.KNN, **params.RUNTIME}

    def __init__(
        self,
        size: int = 16,
        crop: bool = False,
        zero_mean: bool = True,
        norm: str = "l1",
        k: int = 1,
        metric: str = "l1",
        weighted: bool = False,
        n_jobs: int | None = None,
        joblib_backend: str = "loky",
    ):
        self.size = size
        self.crop = crop
        self.zero_mean = zero_mean
        self.norm = norm
        self.k = k
        self.metric = metric
        self.weighted = weighted
        self.n_jobs = n_jobs
        self.joblib_backend = joblib_backend

    def _classifier(self):
        return make_classifier("knn", k=self.k, metric=self.metric, weighted=self.weighted)


@register_method("tiny-svm", family="classical",
                 description="Tiny grayscale images (16x16, normalised) + one-vs-rest linear SVM")
class TinySVM(_TinyBase):
    """Tiny grayscale images + one-vs-rest linear SVM (LinearSVC, C)."""

    parameters = {**params.TINY, **params.RUNTIME}

    def __init__(
        self,
        size: int = 16,
        crop: bool = False,
        zero_mean: bool = True,
        norm: str = "l2",
        C: float = 1.0,
        seed: int = 0,
        n_jobs: int | None = None,
        joblib_backend: str = "loky",
    ):
        self.size = size
        self.crop = crop
        self.zero_mean = zero_mean
        self.norm = norm
        self.C = C
        self.seed = seed
        self.n_jobs = n_jobs
        self.joblib_backend = joblib_backend

    def _classifier(self):
        return make_classifier("linear-svm", C=self.C, seed=self.seed)


def cache_stats() -> dict[str, Any]:
    """Tiny-image cache hits/misses in this process (for benchmarks and info)."""
    return dict(_stats)
