"""Dense SIFT: documented grid in both backends, backend agreement, small images, encodings."""

from __future__ import annotations

import numpy as np
import pytest

from cvbench.baselines import sift as S
from cvbench.baselines.encode import (
    assign_descriptors,
    assign_hard,
    assign_soft,
    normalise,
    pyramid_dim,
    pyramid_histogram,
    pyramid_weights,
)
from cvbench.errors import UserError

BACKENDS = ["opencv", "numpy"] + (["vlfeat"] if S.vlfeat_available() else [])


def _texture(h: int = 97, w: int = 131, seed: int = 0) -> np.ndarray:
    """A smooth random texture with edges (uint8), so descriptors are not degenerate."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    img[h // 3 : h // 2, :] += 60
    img[:, w // 2 :] -= 40
    return np.clip(img, 0, 255).astype(np.uint8)


def _expected_grid(h, w, step, sizes):
    offs = S.grid_offsets(tuple(sizes))
    out = []
    for b in sizes:
        ys = [offs[b] + 1.5 * b + i * step for i in range(1000) if offs[b] + 3 * b + i * step <= h - 1]
        xs = [offs[b] + 1.5 * b + i * step for i in range(1000) if offs[b] + 3 * b + i * step <= w - 1]
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        out.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, b)], axis=1))
    return np.vstack(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step,sizes", [(4, (4,)), (3, (5,)), (6, (4, 6, 8))])
def test_grid_matches_documented_positions(backend, step, sizes):
    img = _texture()
    p = S.make_sift_params(step=step, scales=",".join(map(str, sizes)), backend=backend)
    frames, desc, shape = S.dense_sift(img, p)
    assert shape == img.shape
    assert desc.shape == (len(frames), 128) and desc.dtype == np.uint8
    np.testing.assert_allclose(frames, _expected_grid(*img.shape, step, sizes))


def test_vlfeat_first_frame_is_one_and_a_half_bins_in():
    if "vlfeat" not in BACKENDS:
        pytest.skip("cyvlfeat not installed")
    frames, _, _ = S.dense_sift(_texture(), S.make_sift_params(step=5, bin_size=6, backend="vlfeat"))
    assert tuple(frames[0, :2]) == (9.0, 9.0)  # 1.5 * 6, VLFeat's dsift default bounds


@pytest.mark.parametrize("scales", [None, "4,8"])
def test_backends_agree(scales):
    if "vlfeat" not in BACKENDS:
        pytest.skip("cyvlfeat not installed")
    img = _texture(120, 160, seed=3)
    out = {}
    for be in ("vlfeat", "opencv"):
        frames, desc, _ = S.dense_sift(img, S.make_sift_params(step=5, bin_size=4, scales=scales, backend=be))
        out[be] = (frames, S.transform_descriptors(desc, rootsift=False))
    np.testing.assert_array_equal(out["vlfeat"][0], out["opencv"][0])
    assert out["vlfeat"][1].shape == out["opencv"][1].shape
    cos = (out["vlfeat"][1] * out["opencv"][1]).sum(axis=1)
    assert cos.mean() > 0.95, cos.mean()


@pytest.mark.parametrize("step,scales,contrast", [(1, None, 0.0), (3, None, 0.005), (2, "4,6,8,10", 0.0),
                                                  (4, "5,7", 0.005)])
def test_numpy_backend_reproduces_vlfeat(real_scene_or_texture, step, scales, contrast):
    """The numpy re-implementation gives VLFeat's descriptors: same frames, same zeroed
    low-contrast descriptors, bytes equal or off by one (float rounding), nearly all equal."""
    if "vlfeat" not in BACKENDS:
        pytest.skip("cyvlfeat not installed: nothing to compare the numpy backend with")
    img = real_scene_or_texture
    out = {}
    for be in ("vlfeat", "numpy"):
        out[be] = S.dense_sift(img, S.make_sift_params(step=step, scales=scales, backend=be,
                                                       contrast_threshold=contrast))
    (fv, dv, sv), (fn, dn, sn) = out["vlfeat"], out["numpy"]
    assert sv == sn
    np.testing.assert_array_equal(fv, fn)
    diff = np.abs(dv.astype(np.int16) - dn.astype(np.int16))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999, (diff == 0).mean()
    np.testing.assert_array_equal(dv.any(axis=1), dn.any(axis=1))


@pytest.fixture(params=["texture", pytest.param("scene15", marks=pytest.mark.realdata)])
def real_scene_or_texture(request):
    if request.param == "texture":
        return _texture(90, 117, seed=5)
    import cv2

    from tests.conftest import task_data

    folder = task_data(request.getfixturevalue("real_data"), "scene15") / "train" / "Coast"
    files = sorted(folder.glob("*.jpg"))
    assert files, f"no scene15 Coast images under {folder}"
    return cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw", [(10, 10), (1, 1), (8, 200), (200, 3)])
def test_images_smaller_than_window_are_reflect_padded(backend, hw):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, hw, dtype=np.uint8)
    p = S.make_sift_params(step=4, bin_size=4, backend=backend)
    frames, desc, shape = S.dense_sift(img, p)
    need = S.min_image_side(p.sizes)
    assert shape == (max(hw[0], need), max(hw[1], need))
    assert len(frames) >= 1 and desc.shape == (len(frames), 128)
    assert frames[:, 0].max() + 6 <= shape[1] - 1 and frames[:, 1].max() + 6 <= shape[0] - 1


def test_pad_small_reflects():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = S.pad_small(img, (2,))
    assert out.shape == (9, 9)
    np.testing.assert_array_equal(out[:3, :4], img)
    np.testing.assert_array_equal(out[3, :4], img[1])  # reflect-101: row 3 mirrors row 1


def test_rootsift_and_l2_are_unit_norm():
    d = np.random.default_rng(0).integers(0, 256, (50, 128)).astype(np.uint8)
    d[0] = 0
    for root in (True, False):
        X = S.transform_descriptors(d, root)
        n = np.linalg.norm(X, axis=1)
        np.testing.assert_allclose(n[1:], 1.0, rtol=1e-5)
        assert n[0] == 0


def test_bad_params_raise_user_errors():
    with pytest.raises(UserError):
        S.make_sift_params(backend="sift-gpu")
    with pytest.raises(UserError):
        S.make_sift_params(scales="4,x")
    assert S.parse_scales("8,4,4", 4) == (4, 8)


def test_hard_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    X, C = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(np.float32)
    brute = ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(assign_hard(X, C), brute)
    W = assign_soft(X, C, sigma=0.5)
    np.testing.assert_allclose(W.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(W.argmax(1), brute)


@pytest.mark.parametrize("rootsift", [False, True])
def test_assign_descriptors_matches_normalise_then_assign(rootsift):
    """Fused uint8 assignment == transform_descriptors + brute-force nearest centre, across
    several GEMM blocks and with all-zero descriptors."""
    rng = np.random.default_rng(7)
    d = rng.integers(0, 256, (2600, 128)).astype(np.uint8)
    d[rng.random(d.shape) < 0.7] = 0  # sparse, like SIFT
    d[[0, 1500, 2599]] = 0
    C = np.abs(rng.normal(size=(37, 128))).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True) * rng.uniform(1.0, 1.5, (37, 1)).astype(np.float32)
    X = S.transform_descriptors(d, rootsift).astype(np.float64)
    brute = ((X[:, None] - C[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(assign_descriptors(d, C, rootsift), brute)
    np.testing.assert_array_equal(assign_descriptors(d, C, rootsift), assign_hard(S.transform_descriptors(d, rootsift), C))


@pytest.mark.parametrize("levels", [0, 1, 2, 3])
@pytest.mark.parametrize("soft", [False, True])
def test_pyramid_histogram_dims_and_l1(levels, soft):
    rng = np.random.default_rng(levels)
    K, n = 12, 500
    xy = rng.uniform(0, [80, 60], size=(n, 2))
    votes = rng.dirichlet(np.ones(K), size=n) if soft else rng.integers(0, K, n)
    h = pyramid_histogram(xy, (60, 80), votes, K, levels, "l1")
    assert h.shape == (pyramid_dim(K, levels),) == (K * sum(4**lv for lv in range(levels + 1)),)
    assert h.sum() == pytest.approx(1.0, rel=1e-5)
    # level 0 block, before normalisation, is the plain histogram weighted 1/2^L
    raw = pyramid_histogram(xy, (60, 80), votes, K, levels, "none")
    plain = np.bincount(votes, minlength=K) / n if not soft else votes.sum(0) / n
    np.testing.assert_allclose(raw[:K], plain * pyramid_weights(levels)[0], rtol=1e-5)
    # every level's cells add up to that level's weight
    start = 0
    for lvl, wt in enumerate(pyramid_weights(levels)):
        size = K * 4**lvl
        assert raw[start : start + size].sum() == pytest.approx(wt, rel=1e-5)
        start += size


def test_pyramid_weights_are_lazebniks():
    np.testing.assert_allclose(pyramid_weights(2), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(pyramid_weights(0), [1.0])


def test_normalisations():
    h = np.array([[1.0, 3.0, 0.0]])
    np.testing.assert_allclose(normalise(h, "l1"), [[0.25, 0.75, 0]])
    np.testing.assert_allclose(normalise(h, "sqrt"), [[0.5, np.sqrt(0.75), 0]])
    np.testing.assert_allclose(np.linalg.norm(normalise(h, "l2")), 1.0)
    with pytest.raises(UserError):
        normalise(h, "l3")


def _vl_fast_atan2_mod_2pi_scalar(y: np.float32, x: np.float32) -> np.float32:
    """VLFeat 0.9.21's vl_fast_atan2_f then vl_mod_2pi_f, transcribed line by line in float32
    scalars (the reference for the vectorised, branch-free version)."""
    f = np.float32
    abs_y = f(abs(y)) + f(np.finfo(np.float32).eps)
    if x >= 0:
        r = (x - abs_y) / (x + abs_y)
        angle = f(np.pi / 4)
    else:
        r = (x + abs_y) / (abs_y - x)
        angle = f(3 * np.pi / 4)
    angle = angle + (f(0.1821) * r * r - f(0.9675)) * r
    angle = -angle if y < 0 else angle
    while angle < 0:
        angle = angle + f(2 * np.pi)
    return f(angle)


def test_fast_atan2_matches_vlfeats_scalar_code():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 0.3, 400), [0, 0, 0.5, -0.5, 1e-9, -1e-9, 0.2, 0]]).astype(np.float32)
    x = np.concatenate([rng.normal(0, 0.3, 400), [0, -0.5, 0, 0, -1e-9, 1e-9, -0.2, 0.3]]).astype(np.float32)
    y[::7] = 0  # axis-aligned gradients, the common case in flat image regions
    x[3::11] = 0
    got = S._vl_fast_atan2(y.reshape(17, 24), x.reshape(17, 24)).ravel()
    want = np.array([_vl_fast_atan2_mod_2pi_scalar(a, b) for a, b in zip(y, x)], np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() < np.float32(2 * np.pi)


def test_fast_sqrt_matches_vlfeats_scalar_code():
    def scalar(x):  # vl_fast_resqrt_f (bit trick + two Newton steps) times x, zero below 1e-8
        f = np.float32
        if x < f(1e-8):
            return f(0)
        half = f(0.5) * x
        u = np.array([x], np.float32).view(np.int32)
        u = (np.int32(0x5F3759DF) - (u >> 1)).view(np.float32)[0]
        u = u * (f(1.5) - half * u * u)
        u = u * (f(1.5) - half * u * u)
        return f(x * u)

    x = np.concatenate([np.random.default_rng(1).random(300) ** 4, [0, 1e-9, 1e-8, 1.0, 2.0]]).astype(np.float32)
    np.testing.assert_array_equal(S._vl_fast_sqrt(x), np.array([scalar(v) for v in x], np.float32))


def test_auto_backend_is_numpy():
    assert S.resolve_backend("auto") == S.AUTO_BACKEND == "numpy"
    assert S.make_sift_params(backend="auto").backend == "numpy"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw,step,scales", [((97, 131), 4, None), ((60, 45), 3, "4,6,8"), ((9, 30), 2, None)])
def test_grid_frames_are_dense_sifts_frames(backend, hw, step, scales):
    """The descriptor store keeps no frames: grid_frames(shape) must be dense_sift's exactly."""
    p = S.make_sift_params(step=step, scales=scales, backend=backend)
    frames, _, shape = S.dense_sift(_texture(*hw, seed=2), p)
    assert shape == S.padded_shape(hw, p.sizes)
    np.testing.assert_array_equal(S.grid_frames(shape, p), frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_sift_blocks_keep_bytes_gives_dense_sifts_descriptors(backend):
    p = S.make_sift_params(step=3, scales="4,6", backend=backend)
    img = _texture(70, 90, seed=3)
    frames, desc, shape = S.dense_sift(img, p)
    f2, blocks, s2, kept = S.dense_sift_blocks(img, p, keep_bytes=True)
    floats = np.zeros((128, len(f2)), np.float32)
    for sl, block in blocks:
        floats[:, sl] = block
    assert s2 == shape
    np.testing.assert_array_equal(f2, frames)
    np.testing.assert_array_equal(kept, desc)
    np.testing.assert_array_equal(floats.T, desc.astype(np.float32))
