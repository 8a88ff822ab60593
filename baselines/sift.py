"""Dense SIFT on a regular grid, with two backends that share one geometry.

Backends:

- ``vlfeat``: VLFeat's ``dsift`` through cyvlfeat (flat window, ``fast=True``).
- ``numpy``: the same algorithm (VLFeat 0.9.21's flat-window ``vl_dsift_process``: its fast
  atan2/sqrt approximations, bilinear orientation binning, triangular spatial binning, the
  per-bin Gaussian window mean, normalise / clamp 0.2 / renormalise, ``min(512 d, 255)``)
  written with whole-array numpy and OpenCV filtering. On scene15 images 99.96% of the
  descriptor bytes are identical to vlfeat's and the rest differ by 1 (float rounding), and
  at step 1 it is ~5x faster: VLFeat writes each orientation plane into the descriptors with
  a 512-byte stride, here every copy is a contiguous row of frames.
  See tests/test_sift.py::test_numpy_backend_reproduces_vlfeat.
- ``opencv``: OpenCV's SIFT descriptor computed at grid keypoints
  (``cv2.SIFT_create().compute``).

``backend="auto"`` picks numpy: VLFeat's descriptors (to the last bit or one) and, measured
on scene15 (one 2-core machine, CPU time per image, decode excluded), faster than VLFeat's
own code at every step: 3.6 vs 8.0 ms at step 4 (tests/benchmarks/test_bench_sift.py's
test_ratio_auto_backend keeps measuring it at steps 1, 4 and 8).

Grid (0-based pixel coordinates, pixel centres on integers, as in VLFeat's ``dsift``).
For one scale with spatial bin size ``b`` (pixels), a descriptor is a 4 x 4 array of bins
whose centres sit at ``centre + (-1.5, -0.5, 0.5, 1.5) * b`` on each axis. Descriptors are
placed where all 16 bin centres lie inside the image::

    x_i = off + 1.5 * b + i * step,   i = 0, 1, ...   while  off + 3 * b + i * step <= W - 1

(same for y with H). ``off`` is 0 for a single scale. With several bin sizes (PHOW,
``scales="4,6,8,10"``) VLFeat's ``vl_phow`` rule is used: ``off_b = floor(1.5 * (B - b))``
with ``B`` the largest bin size, so the first centre of every scale is (within half a pixel)
at ``1.5 * B``, and each scale's image is smoothed by a Gaussian of sigma ``b / magnif``
(``magnif = 6``) before sampling, as ``vl_phow`` does. A single scale is not smoothed
unless ``smooth=True`` (the source study ran plain ``dsift``).

OpenCV mapping. OpenCV's descriptor bin width is ``3 * kp.size / 2`` (``SIFT_DESCR_SCL_FCTR
* size/2``), so a keypoint of ``size = 2 * b / 3`` has bins of ``b`` pixels, the same support
as VLFeat's (4 bins of ``b``, bilinear spatial binning). Keypoints are created with octave 0
and ``sigma=0.5`` in ``SIFT_create`` so OpenCV adds no blur of its own (its base-image blur is
``sqrt(sigma^2 - 0.5^2)``); the per-scale smoothing above is applied first, identically for
both backends. Remaining differences: OpenCV weights the window with a Gaussian (sigma = 2
bins) where VLFeat's fast mode uses a flat window, and OpenCV rounds each centre to the
nearest pixel (``cvRound``), so with odd bin sizes its centres sit half a pixel from VLFeat's.
OpenCV's orientation bins run the other way round (y up); they are permuted into VLFeat's
order. On scene15 images the two backends' descriptors then have mean cosine ~0.99.

Small images: when a side is shorter than ``4 * B + 1`` (one full descriptor support of the
largest bin size), the image is padded by reflection (``cv2.BORDER_REFLECT_101``) on the
bottom/right to that size, so every image yields at least one descriptor; frames then refer
to the padded image. Descriptors are uint8 (VLFeat's ``min(512 * d, 255)`` after the usual
L2-normalise / clamp 0.2 / renormalise; OpenCV produces the same quantisation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cvbench.errors import UserError

BACKENDS = ("auto", "vlfeat", "numpy", "opencv")
# What "auto" resolves to: the fastest backend whose descriptors match VLFeat's (bytes equal or
# off by one). Measured, not assumed: tests/benchmarks/test_bench_sift.py::test_ratio_auto_backend
# times numpy against VLFeat at steps 1, 4 and 8 (numpy 2.2x faster at step 4 on scene15).
AUTO_BACKEND = "numpy"
MAGNIF = 6.0  # VLFeat's magnification factor: keypoint scale = bin size / magnif


def vlfeat_available() -> bool:
    """True when cyvlfeat (VLFeat's dense SIFT) can be imported."""
    try:
        import cyvlfeat.sift  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def resolve_backend(backend: str) -> str:
    """'auto' -> 'numpy' (the fastest backend whose descriptors match VLFeat's, see the module
    docstring); checks explicit names."""
    if backend not in BACKENDS:
        raise UserError(f"unknown dense SIFT backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "auto":
        return AUTO_BACKEND
    if backend == "vlfeat" and not vlfeat_available():
        raise UserError(
            "dense SIFT backend 'vlfeat' needs cyvlfeat (pip install cyvlfeat, or `make vlfeat`); "
            "use backend='numpy' (the same descriptors), 'opencv' or 'auto'"
        )
    return backend


def parse_scales(scales: Any, bin_size: int) -> tuple[int, ...]:
    """Bin sizes from `scales` ("4,6,8,10", 8, [4, 8] or None -> (bin_size,))."""
    if scales is None or scales == "":
        out: tuple[int, ...] = (int(bin_size),)
    elif isinstance(scales, str):
        try:
            out = tuple(int(s) for s in scales.replace(" ", "").split(",") if s)
        except ValueError:
            raise UserError(f"scales must be bin sizes like '4,6,8,10', got {scales!r}") from None
    elif isinstance(scales, (int, np.integer)):
        out = (int(scales),)
    else:
        out = tuple(int(s) for s in scales)
    if not out or min(out) < 1:
        raise UserError(f"bin sizes must be positive integers, got {scales!r}")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class SiftParams:
    """Everything that defines the descriptors of an image (the cache key uses all of it)."""

    step: int = 4
    sizes: tuple[int, ...] = (4,)
    backend: str = "vlfeat"  # resolved: "vlfeat", "numpy" or "opencv"
    smooth: bool = False  # Gaussian pre-smoothing sigma = b / magnif per scale (PHOW)
    contrast_threshold: float = 0.0  # vlfeat, numpy: zero descriptors whose norm is below
    max_side: int | None = None

    def __post_init__(self):
        if int(self.step) < 1:
            raise UserError(f"SIFT step must be a positive integer, got {self.step!r}")

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return d


def make_sift_params(
    step: int = 4,
    bin_size: int = 4,
    scales: Any = None,
    backend: str = "auto",
    smooth: bool | None = None,
    contrast_threshold: float = 0.0,
    max_side: int | None = None,
) -> SiftParams:
    """Build SiftParams from plain values; smooth=None means 'smooth iff several scales'."""
    sizes = parse_scales(scales, bin_size)
    return SiftParams(
        step=int(step),
        sizes=sizes,
        backend=resolve_backend(backend),
        smooth=bool(len(sizes) > 1 if smooth is None else smooth),
        contrast_threshold=float(contrast_threshold),
        max_side=None if max_side is None else int(max_side),
    )


def grid_offsets(sizes: tuple[int, ...]) -> dict[int, int]:
    """Per bin size, the top-left bound of its grid (vl_phow: floor(1.5 * (max - b)))."""
    big = max(sizes)
    return {b: int(math.floor(1.5 * (big - b))) for b in sizes}


def grid_centres(length: int, step: int, bin_size: int, offset: int = 0) -> np.ndarray:
    """Descriptor centres along one axis of `length` pixels (see the module docstring)."""
    n = (length - 1 - offset - 3 * bin_size) // step + 1
    return offset + 1.5 * bin_size + step * np.arange(max(n, 0), dtype=np.float64)


def min_image_side(sizes: tuple[int, ...]) -> int:
    """Smallest side that holds one full descriptor support (4 bins) of every scale."""
    big = max(sizes)
    return 4 * big + 1


def padded_shape(shape: tuple[int, int], sizes: tuple[int, ...]) -> tuple[int, int]:
    """The (h, w) pad_small gives an image of `shape`: what frames refer to."""
    need = min_image_side(sizes)
    return max(int(shape[0]), need), max(int(shape[1]), need)


def grid_frames(shape: tuple[int, int], params: SiftParams) -> np.ndarray:
    """Frames (n, 3) [x, y, bin size] float32 of an image of (padded) `shape`: the grid every
    backend samples, in dense_sift's order (per scale, row-major over (y, x)). The descriptor
    store keeps only descriptors and shapes, and rebuilds frames from this."""
    h, w = shape
    offsets = grid_offsets(params.sizes)
    parts = []
    for b in params.sizes:
        gx, gy = np.meshgrid(grid_centres(w, params.step, b, offsets[b]),
                             grid_centres(h, params.step, b, offsets[b]))
        xy = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
        parts.append(_with_bin(xy, b))
    return np.vstack(parts)


def pad_small(img: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Reflect-pad (bottom/right) an image whose side is shorter than min_image_side."""
    import cv2

    need = min_image_side(sizes)
    h, w = img.shape[:2]
    if h >= need and w >= need:
        return img
    bottom, right = max(0, need - h), max(0, need - w)
    if min(h, w) < 2:  # reflect-101 needs two pixels; replicate a single row/column first
        img = cv2.copyMakeBorder(img, 0, max(0, 2 - h), 0, max(0, 2 - w), cv2.BORDER_REPLICATE)
        h, w = img.shape[:2]
        bottom, right = max(0, need - h), max(0, need - w)
    # reflect in rounds: one round can add at most side - 1 pixels
    while bottom or right:
        h, w = img.shape[:2]
        b, r = min(bottom, h - 1), min(right, w - 1)
        img = cv2.copyMakeBorder(img, 0, b, 0, r, cv2.BORDER_REFLECT_101)
        bottom, right = bottom - b, right - r
    return img


def _smoothed(img: np.ndarray, b: int, smooth: bool) -> np.ndarray:
    """float32 image in [0, 1] (VLFeat's im2single), Gaussian-smoothed for bin size b."""
    import cv2

    im = img.astype(np.float32) / 255.0
    if smooth:
        sigma = b / MAGNIF
        im = cv2.GaussianBlur(im, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    return im


def _vlfeat_scale(im: np.ndarray, p: SiftParams, b: int, off: int):
    from cyvlfeat.sift import dsift

    h, w = im.shape
    frames, desc = dsift(
        im, step=p.step, size=b, bounds=np.array([off, off, h - 1, w - 1]), fast=True,
        norm=p.contrast_threshold > 0,
    )
    if len(frames) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    xy = np.ascontiguousarray(frames[:, 1::-1], dtype=np.float32)  # cyvlfeat gives (y, x)
    if p.contrast_threshold > 0:
        desc = np.array(desc, copy=True)
        desc[frames[:, 2] < p.contrast_threshold] = 0
    return xy, np.asarray(desc, dtype=np.uint8)


# ---- VLFeat's flat-window dense SIFT in numpy (backend "numpy"); see the module docstring

_F32_EPS = np.float32(np.finfo(np.float32).eps)  # VL_EPSILON_F
BLOCK = 1024  # descriptors per block: 128 x 1024 floats, and 1024 x 400 word scores, fit in L2


_QUADRANT_BASE = np.array([3 * np.pi / 4, np.pi / 4], np.float32)  # x < 0, x >= 0


def _vl_fast_atan2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """VLFeat's vl_fast_atan2_f (a cubic rational approximation), mapped to [0, 2 pi) as
    dsift does (float32, radians).

    Branch-free: the sign choices are multiplications by +-1 and the 2 pi wrap an addition of
    0 or 2 pi, which round exactly as the per-element branches of VLFeat (and of the earlier
    np.where formulation, ~3x slower; tests/test_sift.py checks bytes against VLFeat)."""
    ay = np.abs(y)
    ay += _F32_EPS
    pos = x >= 0
    s = pos.astype(np.float32)  # +1 where x >= 0, else -1
    s *= 2
    s -= 1
    num = np.multiply(s, ay)
    np.subtract(x, num, out=num)  # x - ay where x >= 0, else x + ay
    den = np.multiply(s, x)
    den += ay  # x + ay where x >= 0, else ay - x (> 0 either way)
    r = np.divide(num, den, out=num)
    ang = _QUADRANT_BASE[pos.view(np.uint8)]
    t = np.multiply(r, np.float32(0.1821), out=den)  # (0.1821 r r - 0.9675) r, VLFeat's order
    t *= r
    t -= np.float32(0.9675)
    t *= r
    ang += t
    sy = (y < 0).astype(np.float32)  # -1 where y < 0, else +1
    sy *= -2
    sy += 1
    ang *= sy
    wrap = (ang < 0).astype(np.float32)
    wrap *= np.float32(2 * np.pi)
    ang += wrap
    return ang


def _vl_fast_sqrt(x: np.ndarray) -> np.ndarray:
    """VLFeat's vl_fast_sqrt_f: x * (inverse square root by bit trick + two Newton steps)."""
    x = np.asarray(x, np.float32)
    u = np.maximum(x, np.float32(1e-8))
    half = np.multiply(u, np.float32(0.5))
    i = u.view(np.int32)
    np.right_shift(i, 1, out=i)
    np.subtract(np.int32(0x5F3759DF), i, out=i)  # u now holds the bit-trick estimate
    t = np.empty_like(u)
    for _ in range(2):  # u = u (1.5 - (0.5 x u) u)
        np.multiply(half, u, out=t)
        t *= u
        np.subtract(np.float32(1.5), t, out=t)
        u *= t
    u *= x
    u[x < np.float32(1e-8)] = 0
    return u


def _window_mean(b: int, i: int, window: float = 2.0) -> float:
    """VLFeat's _vl_dsift_get_bin_window_mean: mean Gaussian window weight over bin i of 4."""
    delta = b * (i - 1.5)
    x = np.arange(-b + 1, b, dtype=np.float64)
    return float(np.mean(np.exp(-0.5 * ((x - delta) / (b * window)) ** 2)))


def _gradients(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VLFeat's image gradient: central differences inside, one-sided at the borders."""
    h, w = im.shape
    gy = np.zeros_like(im)
    gx = np.zeros_like(im)
    if h > 1:
        np.subtract(im[2:], im[:-2], out=gy[1:-1])
        gy[1:-1] *= np.float32(0.5)
        gy[0], gy[-1] = im[1] - im[0], im[-1] - im[-2]
    if w > 1:
        np.subtract(im[:, 2:], im[:, :-2], out=gx[:, 1:-1])
        gx[:, 1:-1] *= np.float32(0.5)
        gx[:, 0], gx[:, -1] = im[:, 1] - im[:, 0], im[:, -1] - im[:, -2]
    return gx, gy


def _orientation_planes(im: np.ndarray, b: int) -> np.ndarray:
    """(8, H, W) gradient magnitude split bilinearly over 8 orientations, then convolved
    with VLFeat's triangular kernel (1/b^2) max(b - |t|, 0) along both axes.

    Written for speed with in-place whole-array passes; the values are those of VLFeat's
    per-pixel loop to the bit of the numpy formulas it replaced (tests/test_sift.py)."""
    import cv2

    h, w = im.shape
    hw = h * w
    gx, gy = _gradients(im)
    ang = _vl_fast_atan2(gy, gx)
    mod = _vl_fast_sqrt(np.multiply(gx, gx, out=gx) + np.multiply(gy, gy, out=gy)).ravel()
    nt = (ang.astype(np.float64) * (8 / (2 * np.pi))).astype(np.float32).ravel()
    lo = np.floor(nt)
    r = np.subtract(nt, lo, out=nt)
    lo = lo.astype(np.int32)
    lo &= 7  # nt may round up to 8.0: bin 8 is bin 0
    whi = np.multiply(r, mod)
    wlo = np.subtract(np.float32(1), r, out=r)
    wlo *= mod
    # each pixel writes its two weights into planes lo and lo + 1 (mod 8): one flat index each
    planes = np.zeros((8, hw), np.float32)
    flat = planes.reshape(-1)
    idx = lo.astype(np.intp)
    idx *= hw
    idx += np.arange(hw)
    flat[idx] = wlo
    idx += hw
    idx[lo == 7] -= 8 * hw
    flat[idx] = whi
    t = np.arange(-b + 1, b)
    k = ((b - np.abs(t)) / float(b * b)).astype(np.float32)
    conv = np.empty((8, h, w), np.float32)
    for o in range(8):
        cv2.sepFilter2D(planes[o].reshape(h, w), cv2.CV_32F, k, k, dst=conv[o],
                        borderType=cv2.BORDER_REPLICATE)
    return conv


def _numpy_blocks(im: np.ndarray, p: SiftParams, b: int, off: int):
    """Frames (n, 2) and a generator of (slice, block): the descriptors of one scale in
    descriptor-major blocks (128, m) of float32 holding the final byte values (0..255)."""
    h, w = im.shape
    ys = grid_centres(h, p.step, b, off)
    xs = grid_centres(w, p.step, b, off)
    ny, nx = len(ys), len(xs)
    gx, gy = np.meshgrid(xs, ys)
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    if nx == 0 or ny == 0:
        return xy, iter(())

    def blocks():
        conv = _orientation_planes(np.ascontiguousarray(im, np.float32), b)
        win = [_window_mean(b, i) for i in range(4)]
        step = p.step
        rows_per = max(1, BLOCK // nx)
        buf = np.empty((4, 4, 8, rows_per, nx), np.float32)  # (bin y, bin x, orientation, frames)
        mass_scale = np.float32(b * b / float((3 * b + 1) ** 2))  # VLFeat's frame "norm"
        for r0 in range(0, ny, rows_per):
            nr = min(rows_per, ny - r0)
            blk = buf[:, :, :, :nr]
            for by in range(4):  # every copy is a contiguous run of frames
                y0 = off + by * b + r0 * step
                rows = conv[:, y0 : y0 + (nr - 1) * step + 1 : step]
                for bx in range(4):
                    x0 = off + bx * b
                    np.multiply(rows[:, :, x0 : x0 + (nx - 1) * step + 1 : step],
                                np.float32(win[by] * win[bx]), out=blk[by, bx])
            d = np.ascontiguousarray(blk).reshape(128, nr * nx)
            low = None
            if p.contrast_threshold > 0:
                low = d.sum(axis=0) * mass_scale < p.contrast_threshold
            # normalise, clamp at 0.2, renormalise (the clamp is applied before dividing)
            n = np.sqrt(np.einsum("ij,ij->j", d, d)) + _F32_EPS
            np.minimum(d, (np.float32(0.2) * n)[None, :], out=d)
            n = np.sqrt(np.einsum("ij,ij->j", d, d)) + _F32_EPS
            d *= (np.float32(512) / n)[None, :]
            np.minimum(d, np.float32(255), out=d)
            np.floor(d, out=d)  # VLFeat's (vl_uint8) cast truncates
            if low is not None:
                d[:, low] = 0
            yield slice(r0 * nx, (r0 + nr) * nx), d

    return xy, blocks()


def _numpy_scale(im: np.ndarray, p: SiftParams, b: int, off: int):
    xy, blocks = _numpy_blocks(im, p, b, off)
    out = np.empty((128, len(xy)), np.uint8)
    for sl, d in blocks:
        out[:, sl] = d
    return xy, out.T  # (n, 128) view of the descriptor-major array


def u8_blocks(desc: np.ndarray, size: int | None = None):
    """(slice, (128, m) float32 block) over uint8 descriptors (n, 128): the layout
    dense_sift_blocks gives, for consumers that work block by block."""
    size = BLOCK if size is None else int(size)
    buf = np.empty((128, min(size, len(desc))), np.float32)
    for s in range(0, len(desc), size):
        m = min(size, len(desc) - s)
        buf[:, :m] = desc[s : s + m].T
        yield slice(s, s + m), buf[:, :m]


def _scales(img: np.ndarray, params: SiftParams):
    """Checked, padded image and per bin size (b, smoothed float image, grid offset, frames
    builder): the part of dense SIFT every backend shares."""
    if img.ndim != 2:
        raise ValueError(f"dense_sift needs a 2-D gray image, got shape {img.shape}")
    img = pad_small(np.ascontiguousarray(img), params.sizes)
    offsets = grid_offsets(params.sizes)
    return img, [(b, _smoothed(img, b, params.smooth), offsets[b]) for b in params.sizes]


def _with_bin(xy: np.ndarray, b: int) -> np.ndarray:
    """Frames (n, 3) [x, y, bin size] from centres (n, 2)."""
    return np.hstack([xy, np.full((len(xy), 1), b, np.float32)])


def dense_sift_blocks(img: np.ndarray, params: SiftParams, keep_bytes: bool = False):
    """dense_sift, but the descriptors come as a generator of (slice, (128, m) float32 block)
    holding the byte values: the numpy backend never builds the (n, 128) uint8 matrix, so a
    step-1 image is assigned to words block by block in cache. Returns (frames, blocks, shape).

    keep_bytes=True returns a fourth item, the uint8 descriptors (n, 128), filled in as the
    blocks are consumed (complete once the generator is exhausted): what the descriptor store
    keeps, without a second pass over the float blocks."""
    if params.backend != "numpy":
        frames, desc, shape = dense_sift(img, params)
        return (frames, u8_blocks(desc), shape) + ((desc,) if keep_bytes else ())
    img, scales = _scales(img, params)
    frames, gens, start = [], [], 0
    for b, im, off in scales:
        xy, blocks = _numpy_blocks(im, params, b, off)
        frames.append(_with_bin(xy, b))
        gens.append((start, blocks))
        start += len(xy)
    out = np.empty((128, start), np.uint8) if keep_bytes else None

    def chained():
        for base, blocks in gens:
            for sl, d in blocks:
                sl = slice(base + sl.start, base + sl.stop)
                if out is not None:
                    out[:, sl] = d
                yield sl, d

    shape = (int(img.shape[0]), int(img.shape[1]))
    return (np.vstack(frames), chained(), shape) + ((out.T,) if keep_bytes else ())


_CV_SIFT = None
_CV_TO_VL_ORIENT = (-np.arange(8)) % 8


def _opencv_scale(im: np.ndarray, p: SiftParams, b: int, off: int):
    import cv2

    global _CV_SIFT
    if _CV_SIFT is None:
        # sigma=0.5 -> OpenCV's base blur sqrt(max(sigma^2 - 0.25, 0.01)) = 0.1 px, i.e. none
        _CV_SIFT = cv2.SIFT_create(sigma=0.5)
    h, w = im.shape
    ys = grid_centres(h, p.step, b, off)
    xs = grid_centres(w, p.step, b, off)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    gx, gy = np.meshgrid(xs, ys)  # row-major over (y, x), the order vlfeat uses
    size = 2.0 * b / 3.0
    kps = [cv2.KeyPoint(float(x), float(y), size, 0.0, 0.0, 0, -1) for x, y in zip(gx.ravel(), gy.ravel())]
    im8 = np.clip(im * 255.0 + 0.5, 0, 255).astype(np.uint8)
    kps_out, desc = _CV_SIFT.compute(im8, kps)
    if desc is None or len(kps_out) != len(kps):
        raise RuntimeError(f"OpenCV SIFT returned {0 if desc is None else len(desc)} of {len(kps)} descriptors")
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    # OpenCV counts orientation bins counter-clockwise (y up), VLFeat clockwise (y down):
    # bin t of OpenCV is bin (-t) mod 8 of VLFeat; the spatial 4 x 4 layout (row, col) agrees.
    desc = desc.reshape(-1, 16, 8)[:, :, _CV_TO_VL_ORIENT].reshape(-1, 128)
    return xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8)


def dense_sift(img: np.ndarray, params: SiftParams) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Dense SIFT of a uint8 gray image -> (frames (n, 3) [x, y, bin], desc (n, 128) uint8, (h, w)).

    The returned (h, w) is the size the frames refer to (after padding small images).
    """
    img, scales = _scales(img, params)
    scale_fn = {"vlfeat": _vlfeat_scale, "numpy": _numpy_scale, "opencv": _opencv_scale}[params.backend]
    frames, descs = [], []
    for b, im, off in scales:
        xy, d = scale_fn(im, params, b, off)
        frames.append(_with_bin(xy, b))
        descs.append(d)
    desc = descs[0] if len(descs) == 1 else np.vstack(descs)
    return np.vstack(frames), desc, (int(img.shape[0]), int(img.shape[1]))


def transform_descriptors(desc: np.ndarray, rootsift: bool) -> np.ndarray:
    """uint8 descriptors -> float32 features: RootSIFT (sqrt of L1-normalised) or L2-normalised.

    Both give unit L2 norm (all-zero descriptors stay zero), so k-means and assignment see
    the same scale whatever the backend.
    """
    d = desc.astype(np.float32)
    if rootsift:
        s = d.sum(axis=1, keepdims=True)
        return np.sqrt(d / np.maximum(s, 1e-12))
    n = np.sqrt(np.einsum("ij,ij->i", d, d))[:, None]
    return d / np.maximum(n, 1e-12)
