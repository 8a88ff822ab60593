"""`bow-sift`: dense SIFT -> k-means vocabulary -> (spatial pyramid) bag of words -> classifier.

Pipeline and caches (all under cvbench.paths.cache_dir, keyed by split fingerprint + params):

1. Descriptors (``cache_dir("sift")``): a split's dense SIFT (uint8 descriptors and image
   shapes; frames are the shape's grid) is stored once as a memory-mapped file when it fits
   ``$CVBENCH_SIFT_CACHE_GB`` GiB (default: a quarter of the free disk, at least 2 GiB; scene15
   at step 4 takes 0.7 GiB per split, at step 1 ~23 GiB); a split that does not fit is
   extracted on the fly, twice when fitting (vocabulary sample, then encoding).
2. Vocabulary (``cache_dir("vocab")``): k-means on a seeded random sample of ``vocab_sample``
   training descriptors, ``ceil(vocab_sample / n_images)`` per image (the same per-image
   rows whether they are read from the store, picked as the store is written or picked in the
   workers, so results never depend on cache state). The sample is drawn from the grid at step
   ``max(step, vocab_step)``: the same descriptors on a coarser grid, so a step-1 run does not
   pay a second full step-1 extraction (nor write a step-4 descriptor store it will not read
   again).
3. Encoding (``cache_dir("bow")``): image by image, in joblib batches (or on a Dask cluster,
   cvbench.parallel), read from the store, or extracted -> RootSIFT/L2 -> assign -> pyramid
   histogram; an extracted split's descriptors come back with its histograms and are written
   to a new store in the same pass (each image is extracted once). Memory stays flat even at
   step 1. A k-sweep or C-sweep re-uses the cached histograms.
4. Classifier: baselines.classifiers.make_classifier (k-NN, linear / chi2 / HIK SVM).
"""

from __future__ import annotations

import io
import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.atomic import atomic_write_bytes
from cvbench.cache import CORRUPT, CacheCorrupt, discard, note
from cvbench.errors import UserError
from cvbench.methods import Method, Scores, register_method
from cvbench.parallel import map_batches
from cvbench.paths import cache_dir

from . import params
from .classifiers import make_classifier
from .encode import (
    assign_blocks,
    assign_soft,
    normalise,
    pyramid_dim,
    pyramid_histogram,
)
from .sift import (
    SiftParams,
    dense_sift,
    dense_sift_blocks,
    grid_frames,
    make_sift_params,
    padded_shape,
    transform_descriptors,
    u8_blocks,
)
from .vocab import (
    digest,
    kmeans,
    load_vocabulary,
    resolve_kmeans_backend,
    save_vocabulary,
    vocab_key,
)

_BATCH = 16  # images per joblib task


# ---------------------------------------------------------------- descriptor extraction


class _limit_threads:
    """One BLAS/OpenMP thread and one OpenCV thread in a worker (joblib runs one per core)."""

    def __enter__(self):
        import cv2
        from threadpoolctl import threadpool_limits

        self._blas = threadpool_limits(1)
        self._cv = cv2.getNumThreads()
        cv2.setNumThreads(1)
        return self

    def __exit__(self, *exc):
        import cv2

        cv2.setNumThreads(self._cv)
        self._blas.restore_original_limits()


def _gray(split, i: int, p: SiftParams) -> np.ndarray:
    return split.image(int(i), "gray", max_side=p.max_side)


def _extract(split, i: int, p: SiftParams):
    return dense_sift(_gray(split, i, p), p)


def _extract_batch(split, idx, p: SiftParams):
    with _limit_threads():
        return [_extract(split, i, p) for i in idx]


def _parallel(fn, args: tuple, batches, n_jobs, backend, desc: str | None = None, **kwargs):
    """fn(split, batch, *rest, **kwargs) over batches, yielding results in order: local joblib
    workers, or the Dask cluster named by $CVBENCH_SCHEDULER (cvbench.parallel); `desc` names
    the progress bar ("<stage> <split>")."""
    split, rest = args[0], args[1:]
    desc = f"{desc} {getattr(split, 'name', '')}".rstrip() if desc else None
    yield from map_batches(partial(fn, split, **kwargs), batches, rest, n_jobs, backend, desc=desc)


def _batches(n: int) -> list[np.ndarray]:
    return [np.arange(s, min(n, s + _BATCH)) for s in range(0, n, _BATCH)]


class DescriptorStore:
    """A split's dense SIFT on disk: desc.u8 (N, 128) uint8 and index.npz (per-image offsets
    and shapes). Frames are not stored: they are the grid of each image's shape
    (sift.grid_frames), rebuilt on read. (Stores written before also hold frames.f32, unread.)"""

    def __init__(self, path: Path, p: SiftParams):
        self.path = Path(path)
        self.params = p
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        with np.load(self.path / "index.npz") as idx:
            self.offsets = idx["offsets"]
            self.shapes = idx["shapes"]
        n = int(self.offsets[-1])
        self.n_descriptors = n
        size = (self.path / "desc.u8").stat().st_size
        if size != n * 128:
            raise CacheCorrupt(f"desc.u8 holds {size} bytes, the index says {n * 128}")
        self.desc = np.memmap(self.path / "desc.u8", np.uint8, "r", shape=(n, 128)) if n else np.zeros((0, 128), np.uint8)

    def __len__(self) -> int:
        return len(self.shapes)

    def get(self, i: int):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        shape = (int(self.shapes[i][0]), int(self.shapes[i][1]))
        frames = self._grids.get(shape)
        if frames is None:  # a dataset has few distinct shapes: each grid is built once
            frames = self._grids[shape] = grid_frames(shape, self.params)
            frames.flags.writeable = False
        if len(frames) != b - a:
            raise CacheCorrupt(f"image {i}: {b - a} stored descriptors, its grid has {len(frames)}")
        return frames, np.asarray(self.desc[a:b]), shape


class _StoreWriter:
    """Writes a descriptor store image by image into a temporary folder; commit() moves it into
    place atomically (the store appears complete or not at all)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        self.fd = open(self.tmp / "desc.u8", "wb")
        self.offsets, self.shapes = [0], []

    def add(self, desc: np.ndarray, shape: tuple[int, int]) -> None:
        self.fd.write(np.ascontiguousarray(desc, np.uint8).tobytes())
        self.offsets.append(self.offsets[-1] + len(desc))
        self.shapes.append(shape)

    def commit(self, p: SiftParams) -> DescriptorStore:
        self.fd.flush()
        os.fsync(self.fd.fileno())
        self.fd.close()
        buf = io.BytesIO()
        np.savez(buf, offsets=np.asarray(self.offsets, np.int64),
                 shapes=np.asarray(self.shapes, np.int32).reshape(-1, 2))
        atomic_write_bytes(self.tmp / "index.npz", buf.getvalue())
        try:
            os.replace(self.tmp, self.path)
        except OSError:  # another process finished the same store first
            shutil.rmtree(self.tmp, ignore_errors=True)
        return DescriptorStore(self.path, p)

    def abort(self) -> None:
        self.fd.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _store_dir(split, p: SiftParams) -> Path:
    return cache_dir("sift") / f"{split.cache_key}-{vocab_key(**p.key())}"


_BYPRODUCT_BUDGET = 2 * 2**30  # a store written as a by-product of encoding (see _store_fits)


def _cache_budget_bytes(folder: Path | None = None) -> float:
    """Largest descriptor store written for one split: $CVBENCH_SIFT_CACHE_GB GiB, else a
    quarter of the free space on the cache's filesystem, within 2..32 GiB. A training split
    whose store does not fit is extracted twice when fitting (vocabulary sample, then
    encoding): with a fixed 2 GiB this made the fit superlinear past ~15k images at step 8."""
    env = os.environ.get("CVBENCH_SIFT_CACHE_GB", "").strip()
    if env:
        try:
            return float(env) * 2**30
        except ValueError:
            raise UserError("CVBENCH_SIFT_CACHE_GB must be a number of GiB, e.g. 2") from None
    folder = folder if folder is not None else cache_dir("sift")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return min(max(2.0 * 2**30, free / 4), 32.0 * 2**30)


def _store_fits(split, p: SiftParams, byproduct: bool = False) -> bool:
    """Whether the split's store fits the budget, estimated from the first image's grid.

    byproduct: a store the encoding pass would write for later runs only (its descriptors
    travel back from the workers and are written, ~1 ms an image): held to 2 GiB unless
    $CVBENCH_SIFT_CACHE_GB says otherwise, so a step-1 split is not written out for nothing."""
    budget = _cache_budget_bytes()
    if byproduct and not os.environ.get("CVBENCH_SIFT_CACHE_GB", "").strip():
        budget = min(budget, _BYPRODUCT_BUDGET)
    shape = padded_shape(_gray(split, 0, p).shape, p.sizes)
    return len(grid_frames(shape, p)) * 128 * len(split) <= budget


def open_store(split, p: SiftParams, n_jobs=None, joblib_backend: str = "loky", build: bool = True,
               on_image=None):
    """The split's descriptor store: cached, freshly built (if it fits the budget), or None.

    on_image(i, desc) is called with each image's descriptors as a new store is written."""
    path = _store_dir(split, p)
    if (path / "index.npz").is_file():
        try:
            return DescriptorStore(path, p)
        except CORRUPT as exc:
            discard(path, exc)
    if not build or len(split) == 0 or not _store_fits(split, p):
        return None
    writer = _StoreWriter(path)
    try:
        i = 0
        for results in _parallel(_extract_batch, (split, p), _batches(len(split)), n_jobs,
                                 joblib_backend, desc="dense SIFT"):
            for _, desc, shape in results:
                writer.add(desc, shape)
                if on_image is not None:
                    on_image(i, desc)
                i += 1
    except BaseException:
        writer.abort()
        raise
    return writer.commit(p)


# ---------------------------------------------------------------- vocabulary sample


def _pick(n: int, m: int, seed: int, i: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), int(i)])
    return np.sort(rng.choice(n, size=m, replace=False)) if n > m else np.arange(n)


def _sample_batch(split, idx, p: SiftParams, m: int, seed: int):
    with _limit_threads():
        out = []
        for i in idx:
            _, desc, _ = _extract(split, i, p)
            out.append(desc[_pick(len(desc), m, seed, i)])
        return out


def sample_descriptors(split, p: SiftParams, n_total: int, seed: int, n_jobs=None,
                       joblib_backend: str = "loky", build_store: bool = True) -> tuple[np.ndarray, int]:
    """Seeded sample of ~n_total uint8 descriptors (ceil(n_total / n) per image) + store hit.

    The rows come from the descriptor store when there is one, are picked as a new store is
    written (build_store=True and it fits), or are picked in the workers as they extract; the
    sample is the same every way (the same rows of the same descriptors)."""
    m = max(1, math.ceil(n_total / max(1, len(split))))
    parts: list = [None] * len(split)

    def pick(i: int, desc: np.ndarray) -> None:
        parts[i] = np.array(desc[_pick(len(desc), m, seed, i)])

    store = open_store(split, p, build=False)
    from_store = store is not None
    if store is not None:
        for i in range(len(split)):
            a, b = int(store.offsets[i]), int(store.offsets[i + 1])
            parts[i] = np.array(store.desc[a + _pick(b - a, m, seed, i)])
    elif build_store:
        store = open_store(split, p, n_jobs, joblib_backend, on_image=pick)
    if store is None:
        results = _parallel(_sample_batch, (split, p, m, seed), _batches(len(split)), n_jobs,
                            joblib_backend, desc="dense SIFT (vocabulary sample)")
        parts = [d for res in results for d in res]
    note("descriptors", hit=from_store, n=len(split), key=str(_store_dir(split, p)))
    return np.vstack(parts) if parts else np.zeros((0, 128), np.uint8), store is not None


# ---------------------------------------------------------------- encoding


def _encode_batch(split, idx, p: SiftParams, store_path, centres, enc: dict, keep: bool = False):
    """Histograms of a batch of images (from the store at store_path, or extracted here); with
    keep=True (no store yet) also the uint8 descriptors and shapes, for the store."""
    store = DescriptorStore(store_path, p) if store_path else None
    K = len(centres)
    out, kept, n_desc = [], [], 0
    with _limit_threads():
        for i in idx:
            desc = None
            if enc["encoding"] == "soft":
                frames, desc, shape = store.get(i) if store else _extract(split, i, p)
                votes = assign_soft(transform_descriptors(desc, enc["rootsift"]), centres, enc["sigma"])
            else:
                if store:
                    frames, desc, shape = store.get(i)
                    blocks = u8_blocks(desc)
                elif keep:
                    frames, blocks, shape, desc = dense_sift_blocks(_gray(split, i, p), p, keep_bytes=True)
                else:
                    frames, blocks, shape = dense_sift_blocks(_gray(split, i, p), p)
                votes = assign_blocks(blocks, len(frames), centres, enc["rootsift"])
            out.append(pyramid_histogram(frames[:, :2], shape, votes, K, enc["levels"], "none"))
            if keep:
                kept.append((np.ascontiguousarray(desc), shape))
            n_desc += len(frames)
    return out, n_desc, kept


def encode_images(split, p: SiftParams, batch_fn, args: tuple, n_jobs=None,
                  joblib_backend: str = "loky", info: dict | None = None,
                  stage: str = "bag of words") -> list:
    """Rows of batch_fn(split, idx, p, store_path, *args, keep=...) over the split, in order.

    The descriptors come from the split's store when there is one. Otherwise each image is
    extracted once, in the workers, and encoded there; when the store fits its budget the
    workers also hand back the descriptors, which are written to the store as they arrive (so
    a later run with another vocabulary or encoding reads instead of extracting)."""
    t0 = time.perf_counter()
    store = open_store(split, p, build=False)
    writer = None
    if store is None and len(split) and _store_fits(split, p, byproduct=True):
        writer = _StoreWriter(_store_dir(split, p))
    rows: list = []
    n_desc = 0
    try:
        batches = _batches(len(split))
        path = store.path if store else None
        stage = stage if store is not None else f"dense SIFT + {stage}"
        for out, n, kept in _parallel(batch_fn, (split, p, path, *args), batches, n_jobs,
                                      joblib_backend, desc=stage, keep=writer is not None):
            rows.extend(out)
            n_desc += n
            for desc, shape in kept:
                writer.add(desc, shape)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.commit(p)
    note("descriptors", hit=store is not None, n=len(split), key=str(_store_dir(split, p)))
    if info is not None:
        info.update(desc_cache=store is not None or writer is not None, n_descriptors=n_desc,
                    store_hit=store is not None, encode_pass_s=round(time.perf_counter() - t0, 3))
    return rows


def encode_split(split, p: SiftParams, centres: np.ndarray, enc: dict, n_jobs=None,
                 joblib_backend: str = "loky") -> tuple[np.ndarray, dict[str, Any]]:
    """Bag-of-words matrix (n, dim) of a split, from the cache or computed image by image.

    The cache holds the unnormalised weighted pyramid counts, so changing `hist_norm` (applied
    last) never re-encodes.
    """
    raw = {k: v for k, v in enc.items() if k != "hist_norm"}
    key = vocab_key(split=split.cache_key, sift=p.key(), vocab=digest(centres), **raw)
    info: dict[str, Any] = {"desc_cache": None, "n_descriptors": None}

    def compute() -> np.ndarray:
        rows = encode_images(split, p, _encode_batch, (centres, enc), n_jobs, joblib_backend, info)
        dim = pyramid_dim(len(centres), enc["levels"])
        return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)

    H, hit = cached_matrix(cache_dir("bow") / f"{key}.npy", compute, "bag-of-words histograms")
    return normalise(H, enc["hist_norm"]), {"hist_cache_hit": hit, **info}


def cached_matrix(path: Path, compute, stage: str | None = None) -> tuple[np.ndarray, bool]:
    """(array, True) from the .npy at `path`, or (compute(), False) after writing it there
    atomically (an unreadable cache file is recomputed). The lookup is counted under `stage`
    (cvbench.cache.note; default: the cache folder's name), one per row."""
    stage = stage or path.parent.name
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            note(stage, hit=True, n=len(arr))
            return arr, True
        except CORRUPT as exc:
            discard(path, exc)
    arr = compute()
    note(stage, hit=False, n=len(arr))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return arr, False


# ---------------------------------------------------------------- the method


@register_method(
    "bow-sift", family="classical",
    description="Dense SIFT (vlfeat/OpenCV) + k-means vocabulary + spatial-pyramid bag of words + k-NN/SVM",
)
class BowSift(Method):
    """Bag of dense SIFT words with an optional spatial pyramid and a k-NN or SVM classifier."""

    feature_cache_params = ("k", "metric", "weighted", "hist_norm", "classifier", "C", "kernel_mode")
    parameters = {**params.SIFT, **params.BOW, **params.KNN, **params.RUNTIME}

    def __init__(
        self,
        step: int = 4,
        bin_size: int = 4,
        scales: Any = None,
        backend: str = "auto",
        smooth: bool | None = None,
        contrast_threshold: float = 0.0,
        rootsift: bool = False,
        vocab_size: int = 400,
        vocab_sample: int = 100_000,
        vocab_step: int = 4,
        kmeans: str = "auto",
        kmeans_iter: int = 25,
        encoding: str = "hard",
        sigma: float = 0.2,
        hist_norm: str = "l1",
        pyramid_levels: int = 0,
        classifier: str = "knn",
        k: int = 8,
        metric: str = "l1",
        weighted: bool = False,
        C: float = 1.0,
        kernel_mode: str = "exact",
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
        self.contrast_threshold = contrast_threshold
        self.rootsift = rootsift
        self.vocab_size = vocab_size
        self.vocab_sample = vocab_sample
        self.vocab_step = vocab_step
        self.kmeans = kmeans
        self.kmeans_iter = kmeans_iter
        self.encoding = encoding
        self.sigma = sigma
        self.hist_norm = hist_norm
        self.pyramid_levels = pyramid_levels
        self.classifier = classifier
        self.k = k
        self.metric = metric
        self.weighted = weighted
        self.C = C
        self.kernel_mode = kernel_mode
        self.max_side = max_side
        self.seed = seed
        self.n_jobs = n_jobs
        self.joblib_backend = joblib_backend

    def _enc(self) -> dict[str, Any]:
        return {"rootsift": bool(self.rootsift), "encoding": self.encoding,
                "sigma": float(self.sigma) if self.encoding == "soft" else None,
                "levels": int(self.pyramid_levels), "hist_norm": self.hist_norm}

    def fit(self, split):
        t_start = time.perf_counter()
        p = make_sift_params(self.step, self.bin_size, self.scales, self.backend, self.smooth,
                             self.contrast_threshold, self.max_side)
        self.sift_params_ = p
        km_backend = resolve_kmeans_backend(self.kmeans)
        # --- vocabulary
        t0 = time.perf_counter()
        pv = replace(p, step=max(p.step, int(self.vocab_step)))
        vkey = vocab_key(train=split.cache_key, sift=pv.key(), rootsift=bool(self.rootsift),
                         k=int(self.vocab_size), sample=int(self.vocab_sample), kmeans=km_backend,
                         iters=int(self.kmeans_iter), seed=int(self.seed))
        centres = load_vocabulary(vkey)
        vocab_hit = centres is not None
        extract_s = kmeans_s = 0.0
        n_sample = None
        if centres is None:
            # a store on the coarser vocabulary grid would only serve other runs: not built
            sample, _ = sample_descriptors(split, pv, int(self.vocab_sample), int(self.seed),
                                           self.n_jobs, self.joblib_backend,
                                           build_store=pv.step == p.step)
            extract_s = time.perf_counter() - t0
            n_sample = len(sample)
            t1 = time.perf_counter()
            centres = kmeans(transform_descriptors(sample, bool(self.rootsift)), int(self.vocab_size),
                             km_backend, int(self.seed), int(self.kmeans_iter))
            kmeans_s = time.perf_counter() - t1
            save_vocabulary(vkey, centres)
        self.centres_ = centres
        vocab_total = time.perf_counter() - t0
        # --- encode the training split
        t0 = time.perf_counter()
        H, enc_info = encode_split(split, p, centres, self._enc(), self.n_jobs, self.joblib_backend)
        encode_s = time.perf_counter() - t0
        # --- classifier
        t0 = time.perf_counter()
        self.clf_ = make_classifier(self.classifier, C=float(self.C), seed=int(self.seed), k=int(self.k),
                                    metric=self.metric, weighted=bool(self.weighted),
                                    kernel_mode=self.kernel_mode, n_jobs=1)
        self.clf_.fit(H, split.labels, n_classes=split.n_classes)
        classify_s = time.perf_counter() - t0
        self.info_ = {
            "backend": p.backend,
            "kmeans_backend": km_backend,
            "sift": p.key(),
            "vocab_sift_step": pv.step,
            "vocab_cache_hit": vocab_hit,
            "vocab_sample": n_sample,
            "feature_dim": int(H.shape[1]),
            "train": {k: v for k, v in enc_info.items() if v is not None},
            "classifier": self.clf_.info(),
            "timings": {
                "vocab_extract_s": round(extract_s, 3),
                "kmeans_s": round(kmeans_s, 3),
                "vocab_s": round(vocab_total, 3),
                "encode_s": round(encode_s, 3),
                "classify_s": round(classify_s, 3),
                "fit_total_s": round(time.perf_counter() - t_start, 3),
            },
            "n_jobs": self.n_jobs,
            "joblib_backend": self.joblib_backend,
            "peak_rss_mib": peak_rss_mib(),
        }
        return self

    def transform(self, split) -> np.ndarray:
        """Bag-of-words features of a split with the fitted vocabulary (cached)."""
        H, _ = encode_split(split, self.sift_params_, self.centres_, self._enc(), self.n_jobs,
                            self.joblib_backend)
        return H

    def predict_scores(self, split) -> Scores:
        t0 = time.perf_counter()
        H, enc_info = encode_split(split, self.sift_params_, self.centres_, self._enc(), self.n_jobs,
                                   self.joblib_backend)
        t1 = time.perf_counter()
        scores = self.clf_.decision_scores(H)
        t2 = time.perf_counter()
        return Scores(scores, info={
            "test": {k: v for k, v in enc_info.items() if v is not None},
            "timings": {"test_encode_s": round(t1 - t0, 3), "test_classify_s": round(t2 - t1, 3)},
            "peak_rss_mib": peak_rss_mib()})


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) of this process; joblib workers (alive) are not counted."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
