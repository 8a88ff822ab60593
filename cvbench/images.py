"""Decode any image a dataset may hold into a uint8 array: grayscale, RGB, CMYK, 16-bit, or
PNG with alpha. Large photographs can be decoded at reduced size (JPEG draft mode)."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import BadImageError

MAX_PIXELS = 200_000_000  # fundus photographs reach 18 Mpx; guard only true bombs
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL warns above it and refuses above twice it; see open_image
ImageFile.LOAD_TRUNCATED_IMAGES = False
_OPEN_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide, not per thread

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | os.PathLike) -> Image.Image:
    """`Image.open`, refusing an image whose header claims more than MAX_PIXELS pixels
    (BadImageError, before any pixel is decoded). PIL itself only warns between its limit and
    twice it; that warning is silenced here, since the size check replaces it."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise BadImageError(path, f"refused: its header claims more than twice cvbench's limit of "
                                  f"{MAX_PIXELS:,} pixels (a decompression bomb?)") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise BadImageError(path, f"refused: its header claims {w} x {h} = {w * h:,} pixels, over "
                                  f"cvbench's limit of {MAX_PIXELS:,} (a decompression bomb?)")
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float images scaled to 0..255 by their dynamic range."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F":
            lo, hi = float(arr.min()), float(arr.max()) or 1.0
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        else:
            arr = arr / hi * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L")
    return im


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _decode(path: str | os.PathLike, mode: str, max_side: int | None,
            draft: tuple[int, int] | None) -> np.ndarray:
    """load_image without the final copy (the array may be read-only)."""
    try:
        return _decode_pil(path, mode, max_side, draft)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, str(exc) or type(exc).__name__) from None


def _decode_pil(path, mode: str, max_side: int | None, draft: tuple[int, int] | None):
    with open_image(path) as im:  # refuses a bomb before decoding (BadImageError)
        if mode == "native":
            mode = "gray" if im.mode in GRAY_MODES else "rgb"
        want = draft or ((max_side, max_side) if max_side is not None else None)
        if want is not None and im.format == "JPEG":
            im.draft("RGB" if mode == "rgb" else "L", want)
        im.load()
        im = _to_8bit(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba)
        im = im.convert("L" if mode == "gray" else "RGB")
        if max_side is not None and max(im.size) > max_side:
            scale = max_side / max(im.size)
            size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def load_image(
    path: str | os.PathLike, mode: str = "rgb", max_side: int | None = None,
    draft: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode `path` into uint8: (H, W) for mode="gray", (H, W, 3) for mode="rgb", and for
    mode="native" (H, W) when the file has no colour (gray, 16-bit), else (H, W, 3).

    Alpha is composited on white; CMYK and palette images are converted; 16-bit images are
    scaled to 8 bits. With `max_side`, JPEGs are decoded at a reduced scale (draft mode) and
    then resized so that the longer side is at most `max_side`. With `draft=(w, h)` (for a
    caller that resizes to a fixed size itself), a JPEG is decoded by the decoder's DCT
    scaling at the smallest scale (1/2, 1/4 or 1/8) that keeps it at least w x h, and not
    resized (`fixed_size_draft` says which size a fixed-size decode asks for).
    Raises BadImageError naming the file when it cannot be decoded.
    """
    if mode not in ("gray", "rgb", "native"):
        raise ValueError(f"mode must be 'gray', 'rgb' or 'native', got {mode!r}")
    return _decode(path, mode, max_side, draft).copy()


def fixed_size_draft(size: int | tuple[int, int]) -> tuple[int, int]:
    """The `draft` of a decode that is then resized to `size` (an int: size x size): the
    decoded JPEG stays at least twice the target on each side, so the DCT scaling reduces
    by 2 (4, 8) once the target is at most a quarter (1/8, 1/16) of the source. Measured on
    a 3000 x 2000 photograph going to 224 px: 3.7x faster than a full decode, mean
    difference from full decode + INTER_AREA 0.9 gray levels; scaling down to the target
    itself was 1.25x faster again but 3x further from it (3.1 levels)."""
    w, h = (size, size) if isinstance(size, int | np.integer) else size
    return 2 * int(w), 2 * int(h)


def decode_item(item: Any, max_side: int | None = None, draft: tuple[int, int] | None = None,
                mode: str = "rgb") -> np.ndarray:
    """uint8 RGB (H, W, 3) of a split item, an image path or a uint8 (H, W[, C]) array;
    mode="native" keeps single-channel images (H, W). max_side / draft: as load_image."""
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        if mode == "native" and (item.ndim == 2 or item.shape[-1] == 1):
            return item.reshape(item.shape[:2])
        return to_rgb(item)
    if mode not in ("rgb", "native"):
        raise ValueError(f"mode must be 'rgb' or 'native', got {mode!r}")
    return _decode(item, mode, max_side, draft)


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> (H, W) with ITU-R 601 luma weights (as PIL); gray passes through."""
    if img.ndim == 2:
        return img
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(img[..., :3].astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> (H, W, 3); RGB passes through."""
    if img.ndim == 3:
        return img
    return np.repeat(img[..., None], 3, axis=2)
