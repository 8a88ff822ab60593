"""Fundus-photograph preprocessing: border crop, square resize, local-average colour
subtraction (Ben Graham, Kaggle 2015) and the source study's exposure screening.

The retina is a bright disc on a black background whose size and offset vary between
cameras (400x315 up to 5184x3456). Cropping to the disc's bounding box and padding to a
square puts every retina at the same scale before resizing; large JPEGs are decoded at a
reduced size (draft mode) rather than in full. `prepare_fundus` turns a path Split into an
in-memory uint8 Split, cached by split fingerprint + parameters, so deep methods train on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from cvbench.atomic import atomic_open
from cvbench.cache import CORRUPT, CacheCorrupt, discard, note
from cvbench.errors import BadImageError
from cvbench.images import to_gray
from cvbench.paths import cache_dir
from cvbench.split import Split

PREPROCESS_MODES = ("none", "crop", "crop+ben")
# The study's rule: under-exposed if >= 90 % of grey values lie in [0, 30];
# over-exposed if >= 80 % lie in [225, 255].
UNDER_RANGE, UNDER_FRACTION = (0, 30), 0.9
OVER_RANGE, OVER_FRACTION = (225, 255), 0.8


def retina_bbox(img: np.ndarray, threshold: int = 10, min_fraction: float = 0.01) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of the retina: rows/columns where more than `min_fraction`
    of pixels are brighter than `threshold` grey levels (ignores isolated noise and text).
    Returns the whole image when nothing is bright enough."""
    gray = to_gray(img) if img.ndim == 3 else img
    mask = gray > threshold
    h, w = mask.shape
    rows = np.flatnonzero(mask.sum(axis=1) > max(1, min_fraction * w))
    cols = np.flatnonzero(mask.sum(axis=0) > max(1, min_fraction * h))
    if len(rows) == 0 or len(cols) == 0:
        return 0, h, 0, w
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_border(img: np.ndarray, threshold: int = 10) -> np.ndarray:
    """The image cropped to the retina's bounding box (black border removed)."""
    y0, y1, x0, x1 = retina_bbox(img, threshold)
    return img[y0:y1, x0:x1]


def pad_to_square(img: np.ndarray, value: int = 0) -> np.ndarray:
    """Pad the shorter side symmetrically with `value` so the aspect ratio is kept on resize."""
    h, w = img.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left,
                              cv2.BORDER_CONSTANT, value=[value] * 3 if img.ndim == 3 else value)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square, then resize to (size, size) (area interpolation when shrinking)."""
    sq = pad_to_square(img)
    interp = cv2.INTER_AREA if sq.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(sq, (size, size), interpolation=interp)


def local_average_subtraction(img: np.ndarray, sigma: float | None = None, mask_circle: bool = True,
                              circle_fraction: float = 0.9) -> np.ndarray:
    """Ben Graham's colour normalisation: 4*img - 4*GaussianBlur(img, sigma) + 128, clipped.

    Removes lighting and camera colour casts, keeps lesions and vessels. `sigma` defaults to
    size/30. With `mask_circle`, pixels outside a centred circle of `circle_fraction` x the
    half-side are set to 128 (the filter's rim artefacts)."""
    h, w = img.shape[:2]
    sigma = sigma if sigma is not None else max(h, w) / 30.0
    f = img.astype(np.float32)
    blur = cv2.GaussianBlur(f, (0, 0), sigmaX=sigma)
    out = np.clip(np.rint(4.0 * f - 4.0 * blur + 128.0), 0, 255).astype(np.uint8)
    if mask_circle:
        yy, xx = np.ogrid[:h, :w]
        r = circle_fraction * min(h, w) / 2.0
        outside = (yy - (h - 1) / 2.0) ** 2 + (xx - (w - 1) / 2.0) ** 2 > r * r
        out[outside] = 128
    return out


def preprocess_fundus(img: np.ndarray, size: int, mode: str = "crop", threshold: int = 10) -> np.ndarray:
    """One fundus photo -> uint8 (size, size, 3): 'none' (pad+resize), 'crop' (border crop,
    pad, resize) or 'crop+ben' (crop, then local-average colour subtraction)."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}")
    if mode != "none":
        img = crop_border(img, threshold)
    out = resize_square(img, size)
    if mode == "crop+ben":
        out = local_average_subtraction(out)
    return out


def exposure_status(img: np.ndarray) -> str:
    """'under', 'over' or 'ok' by the study's rule on the grey-level histogram."""
    gray = to_gray(img) if img.ndim == 3 else img
    hist = np.bincount(gray.ravel(), minlength=256)
    n = max(1, gray.size)
    under = hist[UNDER_RANGE[0]:UNDER_RANGE[1] + 1].sum() / n
    over = hist[OVER_RANGE[0]:OVER_RANGE[1] + 1].sum() / n
    if under >= UNDER_FRACTION:
        return "under"
    if over >= OVER_FRACTION:
        return "over"
    return "ok"


def lesion_statistics(img: np.ndarray, scales: tuple[float, ...] = (0.7, 1.0, 2.0, 4.0, 8.0),
                      radius: float = 0.45) -> np.ndarray:
    """Hand-made features for DR grading: tails of multi-scale difference-of-Gaussians
    responses of the green channel inside the retina disc (bright spots = exudates, dark
    spots = haemorrhages / microaneurysms), plus grey-level percentiles and colour histograms.

    `img` is a square, border-cropped RGB fundus image; returns float32 (12 * len(scales) + 30,)."""
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    inside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 < (radius * min(h, w)) ** 2
    g = img[..., 1].astype(np.float32)
    out: list[float] = []
    for s in scales:
        d = (cv2.GaussianBlur(g, (0, 0), s) - cv2.GaussianBlur(g, (0, 0), 3 * s))[inside]
        sd = float(d.std()) + 1e-6
        out += list(np.percentile(d, [0.1, 1, 5, 95, 99, 99.9]) / sd)
        out += [float(np.mean(d > k * sd)) for k in (3, 5, 8)]
        out += [float(np.mean(d < -k * sd)) for k in (3, 5, 8)]
    v = g[inside]
    out += list(np.percentile(v, [1, 5, 50, 95, 99])) + [float(v.std())]
    for c in range(3):
        out += list(np.bincount(img[..., c][inside] >> 5, minlength=8) / max(1, inside.sum()))
    return np.asarray(out, dtype=np.float32)


def _cache_path(kind: str, fingerprint: str, params: dict[str, Any]):
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir("fundus") / f"{kind}-{fingerprint}-{tag}.npz"


def _save_npz(path, **arrays) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def exposure_screen(split: Split, max_side: int = 256, skip_bad: bool = True) -> np.ndarray:
    """Exposure status ('ok' | 'under' | 'over' | 'bad') of every item, cached by fingerprint.

    Images are decoded at reduced size (`max_side`), which leaves the histogram fractions
    essentially unchanged while a 5184x3456 JPEG decodes in draft mode."""
    if split.in_memory:
        return np.array([exposure_status(split.items[i]) for i in range(len(split))], dtype=object)
    path = _cache_path("exposure", split.cache_key, {"max_side": max_side})
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                status = z["status"].astype(object)
            if len(status) != len(split):
                raise CacheCorrupt(f"{len(status)} entries for {len(split)} images")
            return status
        except CORRUPT as exc:
            discard(path, exc)
    status = []
    for i in range(len(split)):
        try:
            status.append(exposure_status(split.image(i, mode="gray", max_side=max_side)))
        except BadImageError:
            if not skip_bad:
                raise
            status.append("bad")
    arr = np.array(status, dtype="U5")
    _save_npz(path, status=arr)
    return arr.astype(object)


def exposure_counts(status: np.ndarray) -> dict[str, int]:
    """{'checked', 'under', 'over'} counts, as a record stores them."""
    status = np.asarray(status)
    return {"checked": int((status != "bad").sum()), "under": int((status == "under").sum()),
            "over": int((status == "over").sum())}


def prepare_fundus(split: Split, size: int, mode: str = "crop", threshold: int = 10,
                   skip_bad: bool = False) -> Split:
    """The split as an in-memory uint8 (N, size, size, 3) Split after `preprocess_fundus`.

    Path splits are decoded with `max_side = 2 * size` (JPEG draft mode for large originals)
    and cached in the 'fundus' cache by fingerprint + parameters; groups, labels and meta
    are kept, and meta['preprocess'] says what was done."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}")
    params = {"size": int(size), "mode": mode, "threshold": int(threshold), "v": 1}
    meta = {**split.meta, "preprocess": f"fundus {mode} at {size}x{size}"}
    if split.in_memory:
        arr = np.stack([preprocess_fundus(split.image(i, "rgb"), size, mode, threshold)
                        for i in range(len(split))]) if len(split) else np.zeros((0, size, size, 3), np.uint8)
        return replace(split, items=arr, meta=meta, fingerprint="")
    path = _cache_path("prepared", split.cache_key, params)
    arr = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                arr, bad = z["images"], int(z["bad"])
            if arr.shape != (len(split), size, size, 3):
                raise CacheCorrupt(f"shape {arr.shape}, expected {(len(split), size, size, 3)}")
        except CORRUPT as exc:
            discard(path, exc)
            arr = None
    note("fundus images", hit=arr is not None)
    if arr is None:
        out, bad = [], 0
        for i in range(len(split)):
            try:
                img = split.image(i, mode="rgb", max_side=2 * size)
                out.append(preprocess_fundus(img, size, mode, threshold))
            except BadImageError:
                if not skip_bad:
                    raise
                bad += 1
                out.append(np.zeros((size, size, 3), np.uint8))
        arr = np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
        _save_npz(path, images=arr, bad=np.int64(bad))
    if bad:
        meta["bad_images_zeroed"] = bad
    return replace(split, items=arr, meta=meta, fingerprint="")
