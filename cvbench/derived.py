"""Splits derived from a split by changing its images: an augmented copy of every image (a
condition's occlusion masks, a corruption), cached, deterministic per item.

`augmented_split(split, apply, seed, tag)` runs `apply` once on every image, with a random
generator that depends only on (seed, item id), and caches the results as PNG files under
`$CVBENCH_CACHE/augmented/<hash>/`. `with_augmented_copy(split, seed)` is how a condition's
training-batch augmentation reaches a method that does not augment batches itself: the split
plus one augmented copy of every image (each room seen once clean and once occluded).
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .cache import CORRUPT, discard, note
from .paths import cache_dir
from .pixels import as_rgb
from .split import Split


def item_rng(seed: int, key: str | int) -> np.random.Generator:
    """A generator that depends only on (seed, item key), so an item is augmented the same
    way whichever subset (quick, validation, composition) it appears in."""
    tag = zlib.crc32(str(key).encode("utf-8", "backslashreplace")) if not isinstance(key, int) else int(key)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, tag, 0x0CC1])


def augmented_split(split, apply, seed: int, tag: str, name: str | None = None,
                    max_side: int | None = 384, keep_ids: bool = False, meta: dict | None = None):
    """A copy of `split` with `apply(image[None], rng)` run once on every image, the rng
    depending only on (seed, item id). Path items are written once as PNG under
    `$CVBENCH_CACHE/augmented/<hash>/` (longer side at most max_side); in-memory items stay in
    memory. `tag` names the augmentation in the cache key; the copy's meta["augmented_mean"]
    holds the mean of what apply returns as its second value (e.g. the covered fraction).
    With keep_ids the copy's items keep the ids of the originals (a corrupted test image pairs
    with its clean self); `meta` adds facts to the copy's meta."""
    from PIL import Image

    ids = split.item_ids()
    digest = hashlib.sha256(json.dumps([split.cache_key, seed, tag, max_side]).encode()).hexdigest()[:16]
    new_name = name or f"{split.name}+{tag.split(':')[0]}"
    if split.in_memory:
        out, stat = [], []
        for i in range(len(split)):
            img, s = apply(split.image(i, mode="rgb")[None], item_rng(seed, ids[i]))
            out.append(img[0])
            stat.append(s)
        meta = {**split.meta, **(meta or {}), "augmented_mean": _mean(stat),
                **({"item_ids": ids} if keep_ids else {})}
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
    note("augmented images", hit=stat is not None)
    if stat is None:
        stat = []
        for i, path in enumerate(paths):
            img, s = apply(split.image(i, mode="rgb", max_side=max_side)[None], item_rng(seed, ids[i]))
            buf = io.BytesIO()
            Image.fromarray(img[0]).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
            stat.append(float(s))
        atomic_write_text(manifest, json.dumps(stat))
    meta = {**split.meta, **(meta or {}), "augmented_mean": _mean(stat),
            **({"item_ids": ids} if keep_ids else {})}
    return Split(items=[str(p) for p in paths], labels=split.labels, classes=split.classes,
                 name=new_name, groups=dict(split.groups), root=str(folder), meta=meta,
                 fingerprint=digest, aux_classes=split.aux_classes)


def _mean(stat: list[float]) -> float:
    """The mean of the per-image statistics, finite (an identical image's PSNR is capped)."""
    return round(float(np.mean(np.minimum(stat, 99.0))), 4) if len(stat) else 0.0


def with_augmented_copy(split, seed: int):
    """`split` plus one copy of every image augmented by split.augment (with p = 1)."""
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
