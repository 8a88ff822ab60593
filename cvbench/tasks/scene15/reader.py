"""Reader for the 15-scene dataset (Lazebnik, Schmid & Ponce 2006).

Two layouts are accepted:

- split folders (as in the course homework's copy):
  `train/<Class>/*.jpg` and `test/<Class>/*.jpg`; the split on disk is the protocol.
- the original single-folder release (4485 images): `<class>/*.jpg`, 15 class folders;
  standard protocol: `train_per_class` (100) seeded-random training images per class, the
  rest are test images.

Classes are the folder names as on disk, in sorted order. Files are only listed here;
undecodable images surface when a method decodes them (BadImageError names the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvbench.errors import DataError
from cvbench.images import is_image_file
from cvbench.split import Split
from cvbench.tasks import config

LAYOUT = config("scene15")["layout"]
TRAIN_PER_CLASS = 100


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(class_dir: Path) -> list[Path]:
    """Image files of one class folder, sorted; an empty class is a DataError naming it."""
    files = sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and is_image_file(p)
    )
    if not files:
        raise DataError(f"scene15 class folder {class_dir} holds no images (expected *.jpg files)")
    return files


def _listing(side: Path) -> dict[str, list[Path]]:
    dirs = _class_dirs(side)
    if not dirs:
        raise DataError(f"scene15 folder {side} has no class sub-folders; expected layout {LAYOUT}")
    return {d.name: _images(d) for d in dirs}


def _make_split(files: list[Path], labels: list[int], classes: tuple[str, ...], name: str,
                root: Path, variant: str) -> Split:
    return Split(
        items=[str(f) for f in files],
        labels=np.asarray(labels, dtype=np.int64),
        classes=classes,
        name=name,
        root=str(root),
        meta={"variant": variant},
    )


def read(
    folder: str | Path, seed: int = 0, skip_bad: bool = False,
    train_per_class: int = TRAIN_PER_CLASS,
) -> tuple[Split, Split]:
    """(train, test) Splits from either layout (see module doc); `seed` drives the random
    per-class training draw of the single-folder release. `skip_bad` is accepted for the task
    contract; no image is decoded here."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"scene15 folder {folder} does not exist; expected layout {LAYOUT}")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return _read_split_folders(folder)
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        missing = "test" if (folder / "train").is_dir() else "train"
        raise DataError(f"scene15 folder {folder} has no {missing}/ sub-folder; expected layout {LAYOUT}")
    dirs = _class_dirs(folder)
    if not dirs or not any(is_image_file(p) for d in dirs for p in d.iterdir()):
        raise DataError(
            f"scene15 folder {folder} has neither train/ and test/ folders nor class folders of "
            f"images; expected layout {LAYOUT}"
        )
    return _read_single_folder(folder, dirs, seed, train_per_class)


def _read_split_folders(folder: Path) -> tuple[Split, Split]:
    train, test = _listing(folder / "train"), _listing(folder / "test")
    if set(train) != set(test):
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise DataError(
            f"scene15 train/ and test/ under {folder} name different classes "
            f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'})"
        )
    classes = tuple(sorted(train))
    n_tr = sum(len(v) for v in train.values())
    n_te = sum(len(v) for v in test.values())
    variant = f"train/test folders: {n_tr} train / {n_te} test"
    out = []
    for side, listing in (("train", train), ("test", test)):
        files = [f for c in classes for f in listing[c]]
        labels = [i for i, c in enumerate(classes) for _ in listing[c]]
        out.append(_make_split(files, labels, classes, f"scene15/{side}", folder, variant))
    return out[0], out[1]


def _read_single_folder(folder: Path, dirs: list[Path], seed: int,
                        train_per_class: int) -> tuple[Split, Split]:
    classes = tuple(d.name for d in dirs)
    listing = {d.name: _images(d) for d in dirs}
    rng = np.random.default_rng(seed)
    tr_files, tr_labels, te_files, te_labels = [], [], [], []
    for i, c in enumerate(classes):
        files = listing[c]
        if len(files) <= train_per_class:
            raise DataError(
                f"scene15 class folder {folder / c} holds {len(files)} images; the standard "
                f"protocol needs more than {train_per_class} (100 train per class, rest test)"
            )
        pick = np.zeros(len(files), dtype=bool)
        pick[rng.choice(len(files), size=train_per_class, replace=False)] = True
        tr_files += [f for f, p in zip(files, pick) if p]
        te_files += [f for f, p in zip(files, pick) if not p]
        tr_labels += [i] * int(pick.sum())
        te_labels += [i] * int((~pick).sum())
    n = len(tr_files) + len(te_files)
    variant = (
        f"single-folder release ({n} images), {train_per_class} random train per class "
        f"(seed {seed}): {len(tr_files)} train / {len(te_files)} test"
    )
    return (
        _make_split(tr_files, tr_labels, classes, "scene15/train", folder, variant),
        _make_split(te_files, te_labels, classes, "scene15/test", folder, variant),
    )
