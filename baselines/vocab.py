"""Visual vocabularies: k-means on a seeded sample of descriptors, cached on disk.

Backends: faiss (``faiss.Kmeans``: random init, fastest; used by ``"auto"`` when importable),
scikit-learn ``KMeans`` (Lloyd, k-means++ init) and ``MiniBatchKMeans``. Measured once on a
shared 2-core machine (30k synthetic clustered 128-d points, k=200, 25 iterations, 1 thread):
faiss 2.3 s (mean squared distance to the centre 3.75), KMeans 15 s (2.99), MiniBatchKMeans
30 s (3.01): faiss is ~7x faster, k-means++ seeding gives a tighter codebook. See
tests/benchmarks/test_bench_sift.py::test_kmeans_backends.
A vocabulary is cached in ``cache_dir("vocab")`` under a hash of everything that defines it
(training data fingerprint, descriptor parameters, sample size, k, backend, seed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.atomic import atomic_write_bytes
from cvbench.cache import CORRUPT, discard, note
from cvbench.errors import UserError
from cvbench.paths import cache_dir

KMEANS_BACKENDS = ("auto", "faiss", "sklearn", "minibatch")


def import_faiss():
    """`import faiss`, its OpenMP runtime set to wait passively (unless OMP_WAIT_POLICY says
    otherwise): faiss' threads spin at barriers by default, and on a shared, oversubscribed
    machine one descheduled thread then stalls the others (measured on a 2-core machine at
    load 5: 100k x 400 k-means, 2 threads 24 s spinning vs 4.5 s passive; 1 thread 9-10 s).
    libgomp reads the variable when faiss loads it, so it is set for that moment only and
    other OpenMP runtimes (torch's, scikit-learn's) keep their own behaviour."""
    import sys

    if "faiss" in sys.modules:
        return sys.modules["faiss"]
    unset = "OMP_WAIT_POLICY" not in os.environ
    if unset:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import faiss
    finally:
        if unset:
            os.environ.pop("OMP_WAIT_POLICY", None)
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def resolve_kmeans_backend(backend: str) -> str:
    """'auto' -> 'faiss' when importable, else 'sklearn'; validates explicit names."""
    if backend not in KMEANS_BACKENDS:
        raise UserError(f"unknown kmeans backend {backend!r}; valid: {', '.join(KMEANS_BACKENDS)}")
    if backend == "auto":
        return "faiss" if faiss_available() else "sklearn"
    if backend == "faiss" and not faiss_available():
        raise UserError("kmeans backend 'faiss' needs faiss-cpu (pip install faiss-cpu)")
    return backend


def kmeans(X: np.ndarray, k: int, backend: str = "auto", seed: int = 0, n_iter: int = 50,
           n_threads: int = 1) -> np.ndarray:
    """Cluster rows of X into k centres (float32 (k, d)) with the chosen backend."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if len(X) < k:
        raise UserError(f"vocabulary of {k} words needs at least {k} descriptors, got {len(X)}")
    backend = resolve_kmeans_backend(backend)
    from cvbench import progress

    with progress.stage(f"vocabulary: k-means, {k} words from {len(X)} descriptors ({backend})"):
        return _kmeans(X, k, backend, seed, n_iter, n_threads)


def _kmeans(X: np.ndarray, k: int, backend: str, seed: int, n_iter: int, n_threads: int) -> np.ndarray:
    if backend == "faiss":
        faiss = import_faiss()
        km = faiss.Kmeans(X.shape[1], int(k), niter=int(n_iter), seed=int(seed) + 1234,
                          max_points_per_centroid=max(256, len(X) // k + 1), verbose=False)
        # one thread by default: on a shared 2-core machine two threads lost 4x at load 5 even
        # waiting passively (import_faiss), as the run's own workers are idle meanwhile
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, int(n_threads)))
        try:
            km.train(X)
        finally:
            faiss.omp_set_num_threads(before)
        return np.asarray(km.centroids, dtype=np.float32)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=int(k), n_init=1, max_iter=int(n_iter), random_state=int(seed))
    else:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=int(k), n_init=3, batch_size=4096,
                             max_iter=int(n_iter), random_state=int(seed))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(max(1, int(n_threads))):
        km.fit(X)
    return np.asarray(km.cluster_centers_, dtype=np.float32)


def vocab_key(**parts: Any) -> str:
    """Stable 20-hex-char hash of the JSON of `parts` (the cache key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def vocab_path(key: str) -> Path:
    return cache_dir("vocab") / f"{key}.npy"


def load_vocabulary(key: str) -> np.ndarray | None:
    """The cached vocabulary for `key`, or None."""
    path = vocab_path(key)
    if path.is_file():
        try:
            centres = np.load(path, allow_pickle=False)
            note("vocabulary", hit=True)
            return centres
        except CORRUPT as exc:
            discard(path, exc)
    note("vocabulary", hit=False)
    return None


def save_vocabulary(key: str, centres: np.ndarray) -> Path:
    """Write centres atomically to the vocab cache."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(centres, dtype=np.float32), allow_pickle=False)
    path = vocab_path(key)
    atomic_write_bytes(path, buf.getvalue())
    return path


def digest(a: np.ndarray) -> str:
    """Content hash of an array (names a vocabulary inside other cache keys)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
