"""Speed of the bag-of-SIFT stages: dense SIFT per image (every backend), vocabulary
assignment (float rows, and fused from uint8 descriptors), pyramid encoding, k-means, Fisher
encoding; the ratio invariants "numpy dense SIFT >= 3x faster than VLFeat's at step 1" and "a
descriptor-cache hit >= 20x faster than extraction"; and (slow) the full scene15 pipeline from a
cold cache at step 4 (<= 30 s on a quiet 2-core machine) and step 1 with the numpy backend
(<= 3 min), peak RSS of the process tree < 2 GiB.

Times are guarded by `pytest --benchmark` / `make bench` (tests/benchmarks/guard.py); `make
test`'s fast pass runs the quick cases once, unguarded. The full-pipeline benchmarks point
CVBENCH_CACHE at a fresh folder, so caches are cold.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from cvbench.baselines import sift as S
from cvbench.baselines.encode import assign_descriptors, assign_hard, pyramid_histogram
from cvbench.baselines.vocab import KMEANS_BACKENDS, faiss_available, kmeans
from cvbench.split import Split
from tests.benchmarks.guard import paired_ratio
from tests.conftest import task_data

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


def test_ratio_numpy_vs_vlfeat_step1(benchmark, speed_guard):
    """Step 1, one 256x256 image: numpy dense SIFT vs VLFeat's (cyvlfeat), interleaved."""
    if not S.vlfeat_available():
        pytest.skip("cyvlfeat (VLFeat) not installed")
    img = _scene_like()
    p_np = S.make_sift_params(step=1, bin_size=4, backend="numpy")
    p_vl = S.make_sift_params(step=1, bin_size=4, backend="vlfeat")
    t = speed_guard.interleave({"numpy": lambda: S.dense_sift(img, p_np),
                                "vlfeat": lambda: S.dense_sift(img, p_vl)}, speed_guard.rounds(5))
    ratio = paired_ratio(t["vlfeat"], t["numpy"])
    _, desc, _ = benchmark(S.dense_sift, img, p_np)
    benchmark.extra_info.update(numpy_s=round(float(np.median(t["numpy"])), 4),
                                vlfeat_s=round(float(np.median(t["vlfeat"])), 4),
                                vlfeat_over_numpy=round(ratio, 2), n_descriptors=len(desc))
    speed_guard.at_least("dense SIFT step 1: vlfeat / numpy", ratio, 3,
                         f"numpy {np.median(t['numpy']):.3f} s, vlfeat {np.median(t['vlfeat']):.3f} s")


@pytest.mark.parametrize("step", [1, 4, 8])
def test_ratio_auto_backend(benchmark, speed_guard, step):
    """backend="auto" is the fastest backend whose descriptors match VLFeat's (sift.AUTO_BACKEND,
    numpy): numpy vs VLFeat's dsift on one 256x256 image, interleaved, at steps 1, 4 and 8;
    VLFeat / numpy >= 1 at every step (measured 2.2x at step 4 on scene15)."""
    if not S.vlfeat_available():
        pytest.skip("cyvlfeat (VLFeat) not installed: numpy is the only VLFeat-exact backend")
    img = _scene_like()
    p_auto = S.make_sift_params(step=step, bin_size=4, backend="auto")
    p_vl = S.make_sift_params(step=step, bin_size=4, backend="vlfeat")
    t = speed_guard.interleave({"auto": lambda: S.dense_sift(img, p_auto),
                                "vlfeat": lambda: S.dense_sift(img, p_vl)}, speed_guard.rounds(7))
    ratio = paired_ratio(t["vlfeat"], t["auto"])
    _, desc, _ = benchmark(S.dense_sift, img, p_auto)
    benchmark.extra_info.update(step=step, auto=p_auto.backend, vlfeat_over_auto=round(ratio, 2),
                                n_descriptors=len(desc))
    speed_guard.at_least(f"dense SIFT step {step}: vlfeat / auto ({p_auto.backend})", ratio, 1.0,
                         f"auto {np.median(t['auto']):.4f} s, vlfeat {np.median(t['vlfeat']):.4f} s")


def _jpeg_split(folder, n: int) -> Split:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"im_{i:02d}.jpg"
        Image.fromarray(np.roll(_scene_like(), 17 * i, axis=1)).save(path, quality=90)
        paths.append(path)
    return Split(items=paths, labels=np.arange(n) % 2, classes=("a", "b"), name="syn",
                 root=str(folder))


def test_ratio_descriptor_cache_hit(benchmark, speed_guard, tmp_path, monkeypatch):
    """A split's dense SIFT (24 JPEGs, step 4, default backend) from the descriptor store vs
    extracted (decode + SIFT + store written): every image's descriptors read back, both ways,
    interleaved. Ratio >= 20."""
    from cvbench.baselines.bow import open_store

    split = _jpeg_split(tmp_path / "img", 24)
    p = S.make_sift_params(step=4, bin_size=4, backend="auto")
    caches = iter(range(1_000_000))

    def read_all():
        store = open_store(split, p, n_jobs=1)
        return sum(len(store.get(i)[1]) for i in range(len(split)))

    def empty_cache():
        monkeypatch.setenv("CVBENCH_CACHE", str(tmp_path / f"cache{next(caches)}"))

    empty_cache()
    read_all()  # warm-up; leaves a store for the cached side
    t = speed_guard.interleave({"extract": read_all, "cached": read_all}, speed_guard.rounds(5),
                               before_each={"extract": empty_cache})
    ratio = paired_ratio(t["extract"], t["cached"])
    n = benchmark(read_all)
    assert n > 0
    benchmark.extra_info.update(backend=p.backend, images=len(split), n_descriptors=n,
                                extract_over_cached=round(ratio, 1))
    speed_guard.at_least("descriptors: extraction / cache hit", ratio, 20,
                         f"extract {np.median(t['extract']):.3f} s, hit {np.median(t['cached']):.4f} s")


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
def test_kmeans_backends(benchmark, speed_guard, backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    X = np.random.default_rng(0).random((5_000, 128), dtype=np.float32)
    C = benchmark.pedantic(kmeans, args=(X, 50, backend, 0, 20), rounds=speed_guard.rounds(3),
                           iterations=1)
    d = ((X[:, None, :] - C[None]) ** 2).sum(-1).min(1).mean()
    benchmark.extra_info.update(backend=backend, n=5_000, k=50, mean_sq_dist=float(d))


def test_bench_fisher_encode(benchmark):
    """Improved Fisher vector of one 256x256 image (step 4 numpy SIFT, RootSIFT, PCA 64, 64
    Gaussians, pyramid levels 0-1): projection, posteriors, 5 cells."""
    from cvbench.baselines.fisher import FisherModel, encode_image

    rng = np.random.default_rng(0)
    frames, desc, shape = S.dense_sift(_scene_like(), S.make_sift_params(step=4, backend="numpy"))
    q, _ = np.linalg.qr(rng.normal(size=(128, 64)))
    model = FisherModel(mean=np.full(128, 0.05, np.float32), components=q.T.astype(np.float32),
                        weights=rng.dirichlet(np.ones(64)).astype(np.float32),
                        means=rng.normal(0, 0.05, (64, 64)).astype(np.float32),
                        sigmas=rng.uniform(0.03, 0.1, (64, 64)).astype(np.float32))
    v = benchmark(encode_image, frames, desc, shape, model, True, 1)
    assert v.shape == (5 * model.dim,) and np.isfinite(v).all()
    benchmark.extra_info.update(n_descriptors=len(desc), K=64, D=64, levels=1)


# step 4 with the default backend ("auto": numpy since issue 24; vlfeat before) and step 1 with
# numpy; the targets are for a quiet 2-core machine, checked as the time on the baseline's
# reference machine. (Step 1 with vlfeat, ~5x slower than numpy, is left out of `make bench`.)
# Both time targets were below what the 2-core reference VM could do, by the baseline's own
# per-descriptor figures (CPU s, 1 thread): VLFeat at step 4 took 20.0 ms per 256x256 image
# (3721 descriptors), so scene15's 3000 images (~3800 descriptors each) needed ~61 CPU-s, 30.6 s
# on 2 cores, for extraction alone (numpy is 2.2x faster than VLFeat at step 4); at step 1 the 181M descriptors cost 0.62 us each to extract
# (numpy, 59,536 in 37.2 ms) and 1.38 us each to assign to 400 words (the fused GEMM, 45,308
# in 62.7 ms), 363 CPU-s, 182 s on 2 cores before decode, vocabulary and k-means. They stay
# as targets: `make bench` reports them missed rather than passing on a lowered bar.
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.benchmark(timer=time.perf_counter)  # the work runs in joblib workers: wall clock
@pytest.mark.parametrize("step,backend,target_s", [(4, "auto", 30), (1, "numpy", 180)])
def test_full_pipeline_scene15(benchmark, speed_guard, real_data, tmp_path, step, backend,
                               target_s):
    """Cold-cache bag of SIFT k-NN on all of scene15 (extract, vocab, encode, classify), in a
    fresh process (interpreter start-up and imports included), 2 jobs. Peak RSS of its process
    tree < 2 GiB."""
    from tests.benchmarks import e2e

    data = task_data(real_data, "scene15").parent
    caches = itertools.count()

    def run():
        return e2e.run("bow-scene15", data, step, backend, cache=tmp_path / f"cache{next(caches)}")

    speed_guard.target_seconds(f"bag of SIFT step {step} ({backend})", target_s)
    proc = benchmark.pedantic(run, rounds=1, iterations=1)
    out = proc.result()
    benchmark.extra_info.update(step=step, peak_tree_rss_mib=round(proc.peak_mib, 1), **out)
    assert out["accuracy"] > 0.4
    speed_guard.at_most("peak RSS of the process tree, MiB", proc.peak_mib, 2048)
    assert proc.peak_mib < 2048, f"peak RSS of the process tree {proc.peak_mib:.0f} MiB, expected < 2 GiB"


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.benchmark(timer=time.perf_counter)
def test_full_pipeline_fisher_scene15(benchmark, speed_guard, real_data, tmp_path):
    """Cold-cache improved Fisher vectors on all of scene15 (suites/scene15.toml's block: step
    4, RootSIFT, PCA 64, 64 Gaussians, cells L=1, linear SVM C=1), fit + predict in a fresh
    process, 2 jobs; accuracy within its recorded interval (0.870 [0.853, 0.886]); peak RSS of
    the process tree < 2 GiB. Target (issue 24): <= 45 s as time on the reference machine."""
    from tests.benchmarks import e2e

    data = task_data(real_data, "scene15").parent
    speed_guard.target_seconds("Fisher vectors step 4", 45)
    proc = benchmark.pedantic(lambda: e2e.run("fisher-scene15", data, cache=tmp_path / "cache"),
                              rounds=1, iterations=1)
    out = proc.result()
    benchmark.extra_info.update(peak_tree_rss_mib=round(proc.peak_mib, 1), **out)
    assert 0.853 <= out["accuracy"] <= 0.886, out["accuracy"]
    speed_guard.at_most("peak RSS of the process tree, MiB", proc.peak_mib, 2048)
