"""Decoded pixels of a whole split, cached (`Split.pixels`), and augmented copies of a split.

`split_pixels(split, size, mode)` squashes every image to size x size (aspect not kept, as the
studies did), decodes in parallel and caches the array under
`$CVBENCH_CACHE/pixels/<cache_key>-<size>-<mode>.npy`. A cache file whose shape does not match
(or that does not load) is recomputed with a one-line warning.

`with_augmented_copy(split, seed)` is how a condition's training-batch augmentation reaches a
method that does not augment batches itself: the split plus one augmented copy of every
image (each room seen once clean and once occluded), deterministic per item.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_open, atomic_write_bytes, atomic_write_text
from .cache import CORRUPT, discard
from .errors import BadImageError
from .paths import cache_dir


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
    out = np.zeros((len(idx), size, size, 3), np.uint8)
    for j, i in enumerate(idx):
        try:
            out[j] = _resize(split.image(int(i), mode="rgb"), size)
        except BadImageError:
            if not split.meta.get("skip_bad"):
                raise
    return out


def decode_split(split, size: int, n_jobs: int | None = None) -> np.ndarray:
    """Decode every image of a path-based split to uint8 (N, size, size, 3), in parallel."""
    from joblib import Parallel, delayed

    chunks = np.array_split(np.arange(len(split)), max(1, -(-len(split) // 256)))
    jobs = n_jobs if n_jobs and n_jobs > 0 else 1
    parts = Parallel(n_jobs=jobs)(delayed(_decode_chunk)(split, c, size) for c in chunks)
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)


def split_pixels(split, size: int, mode: str = "rgb", n_jobs: int | None = None) -> np.ndarray:
    """See `Split.pixels`."""
    if split.in_memory:
        rgb = as_rgb(split.items)
        rgb = rgb if rgb.shape[1:3] == (size, size) else np.stack([_resize(im, size) for im in rgb])
        return _gray(rgb) if mode == "gray" else rgb
    path = Path(cache_dir("pixels")) / f"{split.cache_key}-{size}-{mode}.npy"
    expected = (len(split), size, size) + ((3,) if mode == "rgb" else ())
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r" if path.stat().st_size > 2e9 else None)
            if arr.shape == expected and arr.dtype == np.uint8:
                return arr
            raise ValueError(f"shape {arr.shape}, expected {expected}")
        except CORRUPT as exc:
            discard(path, exc)
    arr = decode_split(split, size, n_jobs)
    if mode == "gray":
        arr = _gray(arr)
    with atomic_open(path, "wb") as f:
        np.save(f, arr)
    return arr


def item_rng(seed: int, key: str | int) -> np.random.Generator:
    """A generator that depends only on (seed, item key), so an item is augmented the same
    way whichever subset (quick, validation, composition) it appears in."""
    tag = zlib.crc32(str(key).encode("utf-8", "backslashreplace")) if not isinstance(key, int) else int(key)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, tag, 0x0CC1])


def augmented_split(split, apply, seed: int, tag: str, name: str | None = None,
                    max_side: int | None = 384):
    """A copy of `split` with `apply(image[None], rng)` run once on every image, the rng
    depending only on (seed, item id). Path items are written once as PNG under
    `$CVBENCH_CACHE/augmented/<hash>/` (longer side at most max_side); in-memory items stay in
    memory. `tag` names the augmentation in the cache key; the copy's meta["augmented_mean"]
    holds the mean of what apply returns as its second value (e.g. the covered fraction)."""
    from PIL import Image

    from .split import Split

    ids = split.item_ids()
    digest = hashlib.sha256(json.dumps([split.cache_key, seed, tag, max_side]).encode()).hexdigest()[:16]
    new_name = name or f"{split.name}+{tag.split(':')[0]}"
    if split.in_memory:
        out, stat = [], []
        for i in range(len(split)):
            img, s = apply(split.image(i, mode="rgb")[None], item_rng(seed, ids[i]))
            out.append(img[0])
            stat.append(s)
        meta = {**split.meta, "augmented_mean": round(float(np.mean(stat)), 4) if stat else 0.0}
        return Split(items=np.stack(out) if out else split.items, labels=split.labels,
                     classes=split.classes, name=new_name, groups=dict(split.groups), meta=meta,
                     fingerprint=digest, aux_classes=split.aux_classes)
    folder = cache_dir("augmented") / digest
    manifest = folder / "stats.json"
    paths = [folder / f"{i:06d}.png" for i in range(len(split))]
    stat = None
    if manifest.exists() and all(p.exists() for p in paths):
        try:
            stat = json.loads(manifest.read_text())
            if len(stat) != len(paths):
                raise ValueError("length mismatch")
        except CORRUPT as exc:
            discard(manifest, exc)
            stat = None
    if stat is None:
        stat = []
        for i, path in enumerate(paths):
            img, s = apply(split.image(i, mode="rgb", max_side=max_side)[None], item_rng(seed, ids[i]))
            buf = io.BytesIO()
            Image.fromarray(img[0]).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
            stat.append(float(s))
        atomic_write_text(manifest, json.dumps(stat))
    meta = {**split.meta, "augmented_mean": round(float(np.mean(stat)), 4) if stat else 0.0}
    return Split(items=[str(p) for p in paths], labels=split.labels, classes=split.classes,
                 name=new_name, groups=dict(split.groups), root=str(folder), meta=meta,
                 fingerprint=digest, aux_classes=split.aux_classes)


def with_augmented_copy(split, seed: int):
    """`split` plus one copy of every image augmented by split.augment (with p = 1)."""
    from .split import Split

    aug = split.augment
    if aug is None:
        return split

    def apply(batch, rng):
        out = aug.apply(batch, rng, 1.0)
        return out, float(np.mean(out != batch))

    copy = augmented_split(split.with_augment(None), apply, seed, tag=f"{aug.name}:{json.dumps(aug.facts, sort_keys=True)}",
                           name=f"{split.name}+{aug.name}-copy")
    if split.in_memory:
        clean = as_rgb(split.items)
        if clean.shape[1:] != copy.items.shape[1:]:
            raise ValueError("in-memory split and its augmented copy differ in shape")
        items = np.concatenate([clean, copy.items])
    else:
        items = list(split.items) + list(copy.items)
    return Split(
        items=items, labels=np.concatenate([split.labels, split.labels]), classes=split.classes,
        name=f"{split.name}+{aug.name}-copy",
        groups={k: np.concatenate([np.asarray(v), np.asarray(v)]) for k, v in split.groups.items()},
        meta={**split.meta, "augmented": f"x2 (clean + {aug.name})", "augment_facts": aug.facts},
        fingerprint=hashlib.sha256(f"{split.fingerprint}+{copy.fingerprint}".encode()).hexdigest()[:16],
        aux_classes=split.aux_classes,
    )
