"""Speed of the bag-of-SIFT stages: dense SIFT per image (every backend), vocabulary
assignment (float rows, and fused from uint8 descriptors), pyramid encoding, k-means; and
(slow) the full scene15 pipeline at steps 4 and 1.

Nothing asserts on time. The quick cases run once in `make test`'s fast pass; the full
pipeline ones are marked slow (run them with `make bench` or `-m slow --benchmark-enable`).
The full-pipeline benchmarks point CVBENCH_CACHE at a fresh folder, so caches are cold.
"""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.baselines import sift as S
from cvbench.baselines.encode import assign_descriptors, assign_hard, pyramid_histogram
from cvbench.baselines.vocab import KMEANS_BACKENDS, faiss_available, kmeans

BACKENDS = ["opencv", "numpy"] + (["vlfeat"] if S.vlfeat_available() else [])


def _scene_like(h: int = 256, w: int = 256) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step", [4, 8])
def test_dense_sift_per_image(benchmark, backend, step):
    img = _scene_like()
    p = S.make_sift_params(step=step, bin_size=4, backend=backend)
    frames, desc, _ = benchmark(S.dense_sift, img, p)
    benchmark.extra_info.update(backend=backend, step=step, n_descriptors=len(desc), image="256x256")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scales", [None, "4,6,8,10"])
def test_dense_sift_per_image_step1(benchmark, backend, scales):
    p = S.make_sift_params(step=1, bin_size=4, scales=scales, backend=backend)
    _, desc, _ = benchmark(S.dense_sift, _scene_like(), p)
    benchmark.extra_info.update(backend=backend, scales=scales, n_descriptors=len(desc))


@pytest.mark.parametrize("n", [3_000, 50_000])
def test_vocabulary_assignment(benchmark, n):
    rng = np.random.default_rng(0)
    X = rng.random((n, 128), dtype=np.float32)
    C = rng.random((400, 128), dtype=np.float32)
    words = benchmark(assign_hard, X, C)
    assert words.shape == (n,)
    benchmark.extra_info.update(n_descriptors=n, vocab=400)


@pytest.mark.parametrize("fused", [False, True])
def test_assignment_from_uint8_descriptors(benchmark, fused):
    """One step-1 scene15-sized image (48k descriptors, 400 words): normalise to float then
    assign, vs the fused uint8 GEMM. Compare the two rows of one run for the ratio."""
    p = S.make_sift_params(step=1, bin_size=4, backend="numpy")
    _, desc, _ = S.dense_sift(_scene_like(200, 253), p)
    C = S.transform_descriptors(desc[:: max(1, len(desc) // 400)][:400], False)
    if fused:
        words = benchmark(assign_descriptors, desc, C, False)
    else:
        words = benchmark(lambda: assign_hard(S.transform_descriptors(desc, False), C))
    assert words.shape == (len(desc),)
    benchmark.extra_info.update(n_descriptors=len(desc), vocab=len(C), fused=fused)


@pytest.mark.parametrize("levels", [0, 2])
def test_pyramid_encoding(benchmark, levels):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 256, (3_000, 2))
    words = rng.integers(0, 400, 3_000)
    h = benchmark(pyramid_histogram, xy, (256, 256), words, 400, levels, "l1")
    benchmark.extra_info.update(levels=levels, dim=len(h))


@pytest.mark.parametrize("backend", [b for b in KMEANS_BACKENDS if b != "auto"])
def test_kmeans_backends(benchmark, backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    X = np.random.default_rng(0).random((5_000, 128), dtype=np.float32)
    C = benchmark.pedantic(kmeans, args=(X, 50, backend, 0, 20), rounds=1, iterations=1)
    d = ((X[:, None, :] - C[None]) ** 2).sum(-1).min(1).mean()
    benchmark.extra_info.update(backend=backend, n=5_000, k=50, mean_sq_dist=float(d))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("step,backend", [(4, "auto"), (4, "numpy"), (1, "numpy"), (1, "auto")])
def test_full_pipeline_scene15(benchmark, real_data, tmp_path, monkeypatch, step, backend):
    """Cold-cache bag of SIFT k-NN on all 3000 scene15 images (extract, vocab, encode, classify)."""
    import resource

    from cvbench.baselines.bow import BowSift
    from cvbench.tasks.scene15.reader import read as read_scene15
    from tests.conftest import task_data

    train, test = read_scene15(task_data(real_data, "scene15"))

    def run():
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"cache-{np.random.randint(1 << 30)}"))
        m = BowSift(step=step, backend=backend, vocab_size=400, hist_norm="sqrt", metric="l1", k=8,
                    n_jobs=2).fit(train)
        acc = float((m.predict(test) == test.labels).mean())
        return m, acc

    m, acc = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(step=step, backend=m.info_["backend"], accuracy=acc, timings=m.info_["timings"],
                                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
