"""Decoded pixels of a whole split, cached (`Split.pixels`).

`split_pixels(split, size, mode)` squashes every image to size x size (aspect not kept, as the
studies did), decodes in parallel and caches the array under
`$CVBENCH_CACHE/pixels/<cache_key>-<size>-<mode>-v2.npy`. JPEGs are decoded at the decoder's
reduced size (`images.fixed_size_draft`: at least twice the target on each side), then
resized once (v2; v1 decoded in full: the pixels differ only for images at least 4x the
target on both sides, by under one gray level on average, tests/test_images_draft.py). A
cache file whose shape does not match (or that does not load) is recomputed with a one-line
warning. It reads a split through its
public methods only (this module does not import `cvbench.split`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_open
from .cache import CORRUPT, discard, note
from .errors import BadImageError
from .paths import cache_dir

PIXELS_VERSION = 2  # 2: JPEGs decoded at reduced size (draft); 1: in full


def as_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, H, W, 3): gray repeated, alpha dropped."""
    if arr.dtype != np.uint8:
        raise ValueError(f"in-memory images must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        return np.ascontiguousarray(arr[..., :3])
    return arr


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if img.shape[:2] == (size, size):
        return img
    interp = cv2.INTER_AREA if max(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _gray(arr: np.ndarray) -> np.ndarray:
    from .images import to_gray

    return np.stack([to_gray(im) for im in arr]) if len(arr) else arr[..., 0]


def _decode_chunk(split, idx: np.ndarray, size: int) -> np.ndarray:
    import cv2

    from .images import decode_item, fixed_size_draft

    out = np.zeros((len(idx), size, size, 3), np.uint8)
    draft = fixed_size_draft(size)
    for j, i in enumerate(idx):
        try:
            img = _resize(decode_item(split.items[int(i)], draft=draft, mode="native"), size)
            if img.ndim == 2:  # gray files resize one channel (same pixels as RGB, less work)
                cv2.cvtColor(img, cv2.COLOR_GRAY2RGB, dst=out[j])
            else:
                out[j] = img
        except BadImageError:
            if not split.meta.get("skip_bad"):
                raise
    return out


def decode_split(split, size: int, n_jobs: int | None = None) -> np.ndarray:
    """Decode every image of a path-based split to uint8 (N, size, size, 3), in parallel."""
    from joblib import Parallel, delayed

    from . import progress

    chunks = np.array_split(np.arange(len(split)), max(1, -(-len(split) // 256)))
    jobs = n_jobs if n_jobs and n_jobs > 0 else 1
    parts = []
    with progress.bar(len(split), f"decoding {split.name} at {size} px") as bar:
        for part in Parallel(n_jobs=jobs, return_as="generator")(
                delayed(_decode_chunk)(split, c, size) for c in chunks):
            parts.append(part)
            bar.update(len(part))
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)


def split_pixels(split, size: int, mode: str = "rgb", n_jobs: int | None = None) -> np.ndarray:
    """See `Split.pixels`."""
    if split.in_memory:
        rgb = as_rgb(split.items)
        rgb = rgb if rgb.shape[1:3] == (size, size) else np.stack([_resize(im, size) for im in rgb])
        return _gray(rgb) if mode == "gray" else rgb
    path = Path(cache_dir("pixels")) / f"{split.cache_key}-{size}-{mode}-v{PIXELS_VERSION}.npy"
    expected = (len(split), size, size) + ((3,) if mode == "rgb" else ())
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r" if path.stat().st_size > 2e9 else None)
            if arr.shape == expected and arr.dtype == np.uint8:
                note("decoded pixels", hit=True)
                return arr
            raise ValueError(f"shape {arr.shape}, expected {expected}")
        except CORRUPT as exc:
            discard(path, exc)
    note("decoded pixels", hit=False)
    arr = decode_split(split, size, n_jobs)
    if mode == "gray":
        arr = _gray(arr)
    with atomic_open(path, "wb") as f:
        np.save(f, arr)
    return arr
