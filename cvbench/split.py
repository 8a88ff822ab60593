"""`Split`: the one data contract between readers and methods.

A split is a frozen list of items (image paths, or an in-memory uint8 array) with integer
labels, class names, per-item metadata groups (race, gender, patient, ...) and a fingerprint
that names exactly which files and labels a run saw.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadImageError, DataError, UserError
from .images import load_image, to_gray, to_rgb

MAX_PIXELS_SIDE = 1024  # Split.pixels: larger arrays are a mistake, not a request


def relative_name(path: Any, root: str | Path | None) -> bytes:
    """The item's path relative to `root` (as given when outside it), as the bytes the file
    system holds, so that any file name (UTF-8 or not) has one stable identity."""
    p = Path(path)
    if root is not None:
        try:
            p = p.relative_to(root)
        except ValueError:
            pass
    return os.fsencode(p.as_posix())


def fingerprint_of(items: Any, labels: np.ndarray, root: str | Path | None = None) -> str:
    """Hash of the item list (relative paths, or array bytes) plus labels; 16 hex chars."""
    h = hashlib.sha256()
    if isinstance(items, np.ndarray) and items.dtype != object and items.dtype.kind != "U":
        h.update(str(items.shape).encode())
        h.update(np.ascontiguousarray(items).tobytes())
    else:
        for p in items:
            h.update(relative_name(p, root))
            h.update(b"\0")
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """One side of a dataset (train, test, val), as methods see it.

    items:   sequence of image paths, or a uint8 array (N, H, W) / (N, H, W, C)
    labels:  int64 array (N,), indices into `classes`
    classes: class names
    groups:  per-item metadata arrays of length N (e.g. {"race": ..., "patient": ...})
    name:    e.g. "scene15/train"
    root:    data root the paths are relative to (for the fingerprint), if any
    meta:    free-form facts a record should carry (variant, counts, composition, ...)
    aux_classes: the task's extra labels: {group key: class names}, e.g. gender and age on
             FairFace; groups[key] holds the names; any method may use them as auxiliary
             targets (`aux_labels`) or ignore them
    augment: a training-batch augmentation set by a task condition (BatchAugment), or None
    """

    items: Any
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    root: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    aux_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    augment: BatchAugment | None = None

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int64)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.items, np.ndarray):
            object.__setattr__(self, "items", np.asarray([str(p) for p in self.items], dtype=object))
        if len(self.items) != len(labels):
            raise ValueError(f"{self.name}: {len(self.items)} items but {len(labels)} labels")
        for key, values in self.groups.items():
            if len(values) != len(labels):
                raise ValueError(f"{self.name}: group {key!r} has {len(values)} values, expected {len(labels)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            bad = int(labels[(labels < 0) | (labels >= len(self.classes))][0])
            raise DataError(f"{self.name}: label {bad} is outside 0..{len(self.classes) - 1} "
                            f"(the {len(self.classes)} classes)")
        object.__setattr__(self, "aux_classes", {k: tuple(str(c) for c in v)
                                                 for k, v in self.aux_classes.items()})
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint_of(self.items, labels, self.root))

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def cache_key(self) -> str:
        """Key for caches of anything computed from the pixels: the fingerprint plus each
        file's size and modification time, so a file replaced under the same name (or two
        datasets with the same relative names) never reads another's cached features.
        Records keep using `fingerprint`, which is stable across copies of the data."""
        if not isinstance(self.items, np.ndarray) or self.items.dtype != object:
            return self.fingerprint
        h = hashlib.sha256(self.fingerprint.encode())
        for p in self.items:
            try:
                st = os.stat(p)
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
            except OSError:
                h.update(b"missing;")
        return h.hexdigest()[:16]

    @property
    def in_memory(self) -> bool:
        """True when items is a uint8 pixel array rather than a list of paths."""
        return isinstance(self.items, np.ndarray) and self.items.dtype == np.uint8

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes)

    def image(self, i: int, mode: str = "rgb", max_side: int | None = None) -> np.ndarray:
        """Item i as uint8 (H, W) for mode='gray' or (H, W, 3) for mode='rgb'."""
        if self.in_memory:
            img = self.items[i]
            img = to_gray(img) if mode == "gray" else to_rgb(img)
            return img
        return load_image(self.items[i], mode=mode, max_side=max_side)

    def pixels(self, size: int = 32, mode: str = "rgb", n_jobs: int | None = None) -> np.ndarray:
        """Every item decoded and resized to size x size (aspect not kept), as uint8
        (N, size, size, 3) for mode="rgb" or (N, size, size) for "gray"; decoded once and
        cached on disk (keyed by cache_key, size and mode). Images that fail to decode are
        zeros when the split was read with skip_bad, else BadImageError names the file."""
        from .pixels import split_pixels

        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PIXELS_SIDE:
            raise UserError(f"pixels: size must be an integer from 1 to {MAX_PIXELS_SIDE}, got {size!r}")
        if mode not in ("rgb", "gray"):
            raise UserError(f"pixels: mode must be 'rgb' or 'gray', got {mode!r}")
        return split_pixels(self, size, mode, n_jobs)

    def item_ids(self) -> list[str]:
        """A stable id per item for records: the path relative to root, else the index (a
        derived split, e.g. corrupted test images, keeps its originals' ids in meta)."""
        if "item_ids" in self.meta:
            return list(self.meta["item_ids"])
        if not (isinstance(self.items, np.ndarray) and self.items.dtype == object):
            return [str(i) for i in range(len(self))]
        return [relative_name(p, self.root).decode("utf-8", "backslashreplace") for p in self.items]

    def aux_labels(self, key: str) -> np.ndarray:
        """Integer targets of extra label `key` (index into aux_classes[key]; -1 unknown)."""
        if key not in self.aux_classes or key not in self.groups:
            raise UserError(f"{self.name} has no extra label {key!r}; it has {sorted(self.aux_classes) or 'none'}")
        lookup = {c: i for i, c in enumerate(self.aux_classes[key])}
        return np.array([lookup.get(str(v), -1) for v in self.groups[key]], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None, **meta) -> Split:
        """A new split holding items[indices] (fingerprint recomputed)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Split(
            items=self.items[idx],
            labels=self.labels[idx],
            classes=self.classes,
            name=name or self.name,
            groups={k: np.asarray(v)[idx] for k, v in self.groups.items()},
            root=self.root,
            meta={**self.meta, **meta},
            aux_classes=self.aux_classes,
            augment=self.augment,
        )

    def with_augment(self, augment: BatchAugment | None) -> Split:
        return replace(self, augment=augment)

    def describe(self) -> dict[str, Any]:
        """What a record says about this split: name, size, per-class counts, fingerprint."""
        return {
            "name": self.name,
            "n": len(self),
            "fingerprint": self.fingerprint,
            "class_counts": {c: int(n) for c, n in zip(self.classes, self.class_counts())},
            **{k: v for k, v in self.meta.items() if _jsonable(v) and k != "item_ids"},
        }


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict, tuple))


def per_class_limit(split: Split, limit: int, seed: int = 0, name: str | None = None) -> Split:
    """At most `limit` seeded-random items per class (used by --quick runs)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(split.n_classes):
        idx = np.flatnonzero(split.labels == c)
        if len(idx) > limit:
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        keep.append(idx)
    return split.subset(np.sort(np.concatenate(keep)) if keep else [], name=name, quick_limit_per_class=limit)


def carve_validation(
    split: Split, fraction: float = 0.1, seed: int = 0, group_key: str | None = None
) -> tuple[Split, Split]:
    """Carve a stratified validation split from `split` (never from the test split).

    With `group_key` (e.g. "patient"), all items of one group land on the same side.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    idx = np.arange(len(split))
    if group_key is not None:
        groups = np.asarray(split.groups[group_key])
        n_splits = max(2, round(1 / fraction))
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(cv.split(idx, split.labels, groups))
    else:
        counts = split.class_counts()
        present = int((counts > 0).sum())
        n_val = math.ceil(fraction * len(split))  # as StratifiedShuffleSplit counts it
        # stratify when every class has 2 items and both sides can hold every class (e.g.
        # not 14 hotels with 13 validation images); otherwise a seeded random carve
        stratifiable = counts[counts > 0].min() >= 2 and min(n_val, len(split) - n_val) >= present
        stratify = split.labels if stratifiable else None
        if stratify is None:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(split))
            n_val = max(1, round(fraction * len(split)))
            val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        else:
            sss = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            train_idx, val_idx = next(sss.split(idx, stratify))
    base = split.name.rsplit("/", 1)[0]
    return (
        split.subset(np.sort(train_idx), name=f"{base}/train-minus-val"),
        split.subset(np.sort(val_idx), name=f"{base}/val"),
    )


def drop_unreadable(split: Split, n_jobs: int = 4) -> Split:
    """The split without items that fail to decode (for --skip-bad); the count and paths go
    into meta["bad_images"] / meta["bad_paths"] so the record says what was skipped."""
    if split.in_memory or len(split) == 0:
        return split
    from joblib import Parallel, delayed

    def ok(path) -> bool:
        try:
            load_image(path, mode="gray", max_side=64)
            return True
        except BadImageError:
            return False

    from cvbench import progress

    checks = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(ok)(p) for p in split.items)
    good = np.array(list(progress.track(checks, f"checking {split.name} (--skip-bad)",
                                        total=len(split))))
    if good.all():
        return split
    bad = [str(p) for p in split.items[~good]]
    return split.subset(np.flatnonzero(good), bad_images=len(bad), bad_paths=bad[:100])


@dataclass(frozen=True)
class BatchAugment:
    """A training-batch augmentation owned by a task condition (e.g. pasted occlusion masks).

    apply(images, rng, p) -> images: uint8 (N, H, W, C) numpy in and out, each image changed
    with probability p, randomness from the numpy Generator `rng`. The deep engine calls it per
    batch (`p` = self.p); methods that do not augment batches get the split plus one copy of
    every image augmented with p = 1 (see cvbench.derived.with_augmented_copy).
    """

    name: str
    apply: Callable[[np.ndarray, np.random.Generator, float], np.ndarray]
    p: float = 0.5
    facts: dict[str, Any] = field(default_factory=dict)
