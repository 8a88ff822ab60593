"""Common corruptions of test images (Hendrycks & Dietterich, ICLR 2019), as a test-side
condition every task has: `conditions = { corruption = ["none", "jpeg:3", "gaussian_noise:3"] }`.

Each corruption has five severities with the parameters of the published definitions:
CIFAR-10-C's for small images (longer side at most 64 px, e.g. CIFAR-10, the demo digits) and
ImageNet-C's for the others (its definitions are for 224 px photographs). `resolution` is not
one of theirs: it downscales (area) and upscales back (bilinear) by a factor per severity, the
loss of detail a low-resolution camera gives. Our implementations follow the definitions
(numpy / OpenCV / PIL; no ImageMagick): motion blur is a one-sided, Gaussian-weighted line
kernel of 2·radius+1 taps at a random angle in [-45°, 45°], as ImageMagick's MotionBlurImage
builds it.

A corruption is deterministic per image: its random generator depends only on the run seed,
the item's id, the corruption and the severity, so an item is corrupted the same way
whichever subset it appears in. The corrupted test split is derived once and cached as PNG
under $CVBENCH_CACHE/augmented/ (`cvbench.derived.augmented_split`): every family, the pixel
cache and the embedding cache (keyed by file, so by corruption) see it through the usual
decoding. Item ids stay those of the clean images, so a corrupted run pairs item by item with
its clean run.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from .conditions import Condition
from .errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)
SMALL_SIDE = 64  # images up to this side get CIFAR-10-C's parameters

# name -> (CIFAR-10-C parameters, ImageNet-C parameters), one per severity
PARAMS: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
    "gaussian_noise": ((0.04, 0.06, 0.08, 0.09, 0.10), (0.08, 0.12, 0.18, 0.26, 0.38)),
    "shot_noise": ((500, 250, 100, 75, 50), (60, 25, 12, 5, 3)),
    "defocus_blur": (((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
                     ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))),
    "motion_blur": (((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
                    ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))),
    "contrast": ((0.75, 0.5, 0.4, 0.3, 0.15), (0.4, 0.3, 0.2, 0.1, 0.05)),
    "brightness": ((0.05, 0.1, 0.15, 0.2, 0.3), (0.1, 0.2, 0.3, 0.4, 0.5)),
    "pixelate": ((0.95, 0.9, 0.85, 0.75, 0.65), (0.6, 0.5, 0.4, 0.3, 0.25)),
    "jpeg": ((80, 65, 58, 50, 40), (25, 18, 15, 10, 7)),
    "resolution": ((0.9, 0.8, 0.7, 0.6, 0.5), (0.5, 0.35, 0.25, 0.18, 0.12)),  # ours
}
NAMES = tuple(PARAMS)


def parameter(name: str, severity: int, shape: tuple[int, ...]) -> Any:
    """The published parameter of `name` at `severity` for an image of `shape`."""
    small, large = PARAMS[name]
    return (small if max(shape[:2]) <= SMALL_SIDE else large)[int(severity) - 1]


def parse(value: str) -> tuple[str, int] | None:
    """"jpeg:3" -> ("jpeg", 3); "none" -> None; UserError otherwise."""
    text = str(value).strip().lower()
    if text in ("none", ""):
        return None
    name, _, sev = text.partition(":")
    name = "jpeg" if name == "jpeg_compression" else name
    if name not in PARAMS:
        raise UserError(f"unknown corruption {name!r} in {value!r}; corruptions: {', '.join(NAMES)} "
                        "(as name:severity, e.g. jpeg:3), or none")
    try:
        severity = int(sev)
    except ValueError:
        severity = 0
    if severity not in SEVERITIES:
        raise UserError(f"corruption {value!r}: the severity must be 1 to 5, as in {name}:3")
    return name, severity


# ---------------------------------------------------------------- the corruptions (uint8 RGB in and out)
def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_noise(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.0
    return _to_uint8(np.clip(x + rng.normal(0.0, c, x.shape), 0, 1) * 255)


def shot_noise(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.0
    return _to_uint8(np.clip(rng.poisson(x * c) / c, 0, 1) * 255)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """An anti-aliased disk (defocus) kernel, normalised to sum 1."""
    import cv2

    extent = 8 if radius <= 8 else int(np.ceil(radius))
    ax = np.arange(-extent, extent + 1)
    xx, yy = np.meshgrid(ax, ax)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    ksize = (3, 3) if radius <= 8 else (5, 5)
    return cv2.GaussianBlur(disk, ksize, sigmaX=alias_blur)


def defocus_blur(img: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    import cv2

    kernel = disk_kernel(*c)
    out = cv2.filter2D(img.astype(np.float32) / 255.0, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(np.clip(out, 0, 1) * 255)


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """A one-sided line of 2·radius+1 Gaussian-weighted taps at `angle_deg` (and its anchor)."""
    width = 2 * int(radius) + 1
    taps = np.arange(width)
    weights = np.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    weights /= weights.sum()
    theta = np.deg2rad(angle_deg)
    dx, dy = np.rint(taps * np.cos(theta)).astype(int), np.rint(taps * np.sin(theta)).astype(int)
    size = 2 * width + 1
    kernel = np.zeros((size, size), np.float32)
    np.add.at(kernel, (width + dy, width + dx), weights)
    return kernel, (width, width)


def motion_blur(img: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    import cv2

    kernel, anchor = motion_kernel(int(c[0]), float(c[1]), float(rng.uniform(-45, 45)))
    out = cv2.filter2D(img.astype(np.float32), -1, kernel, anchor=anchor, borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(out)


def contrast(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8(np.clip((x - means) * c + means, 0, 1) * 255)


def brightness(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _to_uint8(np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1) * 255)


def pixelate(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BOX), dtype=np.uint8)


def jpeg(img: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def resolution(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * c)), max(1, round(h * c))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


FUNCTIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "defocus_blur": defocus_blur,
    "motion_blur": motion_blur, "contrast": contrast, "brightness": brightness,
    "pixelate": pixelate, "jpeg": jpeg, "resolution": resolution,
}


def corrupt(img: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3): `name` at `severity` (1-5)."""
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return FUNCTIONS[name](rgb, parameter(name, severity, rgb.shape), rng)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of b against a (dB; inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# ---------------------------------------------------------------- the condition
def corrupted_split(split, value: str, seed: int):
    """The test split with every image corrupted (cached; see the module doc)."""
    from .derived import augmented_split

    parsed = parse(value)
    if parsed is None:
        return split
    name, severity = parsed
    salt = f"{name}:{severity}"

    def apply(batch: np.ndarray, rng: np.random.Generator):
        clean = batch[0] if batch[0].ndim == 3 else np.repeat(batch[0][..., None], 3, 2)
        out = corrupt(clean, name, severity, np.random.default_rng([*rng.integers(0, 2**32, 2), *_salt(salt)]))
        return out[None], psnr(clean, out)

    shape = split.image(0, mode="rgb").shape if len(split) else (SMALL_SIDE, SMALL_SIDE)
    facts = {"name": name, "severity": severity, "parameter": _plain(parameter(name, severity, shape)),
             "definitions": "CIFAR-10-C" if max(shape[:2]) <= SMALL_SIDE else "ImageNet-C"}
    return augmented_split(split, apply, seed, tag=f"corruption:{salt}:v1",
                           name=f"{split.name}+{name}{severity}", max_side=None, keep_ids=True,
                           meta={"corruption": facts})


def parse_list(text: str | None) -> list[tuple[str, int]]:
    """"jpeg:3,gaussian_noise:3" -> [("jpeg", 3), ("gaussian_noise", 3)] (UserError on a bad one)."""
    out = []
    for part in filter(None, (p.strip() for p in str(text or "").split(","))):
        parsed = parse(part)
        if parsed is not None:
            out.append(parsed)
    return out


def corrupt_batch(batch: np.ndarray, corruptions: list[tuple[str, int]], p: float,
                  rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, H, W, 3): each image, with probability p, corrupted by one of `corruptions`
    (drawn uniformly): a method's training-time defence."""
    out = batch.copy()
    if not corruptions:
        return out
    for i in np.flatnonzero(rng.random(len(batch)) < p):
        name, severity = corruptions[int(rng.integers(len(corruptions)))]
        out[i] = corrupt(batch[i], name, severity, rng)
    return out


def _salt(text: str) -> list[int]:
    import zlib

    return [zlib.crc32(text.encode())]


def _plain(x: Any) -> Any:
    return list(x) if isinstance(x, tuple) else x


def _check(value: Any) -> None:
    parse(str(value))


CONDITION = Condition(
    "corruption", "test", lambda split, value, seed: corrupted_split(split, value, seed),
    check=_check, neutral="none",
    what=("test images corrupted (Hendrycks & Dietterich 2019): none, or name:severity with "
          f"name in {', '.join(NAMES)} and severity 1-5"))
