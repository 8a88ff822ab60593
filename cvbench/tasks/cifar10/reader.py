"""CIFAR-10 readers: the official python pickles, or an image-folder export.

Layouts (under the task folder, e.g. $CVBENCH_DATA/cifar10):
- `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`: the official release.
  Batches may hold fewer than 10000 rows and may lack `filenames` (the shared subset keeps
  the first rows of each batch). Pickles are read only under the data folder given, only
  these fixed names, with a restricted unpickler that admits nothing but numpy arrays and
  builtin containers, so a planted pickle cannot run code.
- `train/<class>/*.png|jpg`, `test/<class>/...`: one folder per class (official class order
  when the names match CIFAR-10's, else sorted), decoded to RGB in memory.
Both give in-memory splits: items uint8 (N, 32, 32, 3), labels int64.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from cvbench.errors import DataError
from cvbench.images import load_image
from cvbench.split import Split
from cvbench.tasks import classes_of

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = classes_of("cifar10")
OFFICIAL_ROWS = 10000  # rows per official batch
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays and builtin containers."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_batch(path: Path) -> dict:
    """One pickled batch as a dict with str keys (encoding='bytes', restricted globals)."""
    try:
        with open(path, "rb") as f:
            raw = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc}; expected the official python pickle") from None
    if not isinstance(raw, dict):
        raise DataError(f"CIFAR batch {path} holds a {type(raw).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if "data" not in batch or not ({"labels", "fine_labels"} & set(batch)):
        raise DataError(f"CIFAR batch {path} has keys {sorted(batch)}; expected 'data' and 'labels'")
    try:
        raw_data = np.asarray(batch["data"])
        labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"CIFAR batch {path}: unreadable data or labels ({exc})") from None
    if raw_data.dtype.kind not in "ui" or (raw_data.size and (raw_data.min() < 0 or raw_data.max() > 255)):
        bad = raw_data.max() if raw_data.dtype.kind in "ui" and raw_data.size else raw_data.dtype
        raise DataError(f"CIFAR batch {path}: pixel value {bad} is not a byte (0..255)")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        bad = int(labels[(labels < 0) | (labels >= len(CLASSES))][0])
        raise DataError(f"CIFAR batch {path}: label {bad} is not a class index 0..{len(CLASSES) - 1}")
    data = raw_data.astype(np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(
            f"CIFAR batch {path}: data shape {data.shape} with {len(labels)} labels; expected (N, 3072) and N labels"
        )
    # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _safe_file(folder: Path, name: str) -> Path:
    """folder/name, refusing anything that is not a regular file inside folder."""
    path = folder / name
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 file {path}; expected the official {BATCH_DIR} layout")
    if folder.resolve() not in path.resolve().parents:
        raise DataError(f"{path} points outside {folder}; CIFAR pickles are only read from the data folder")
    return path


def load_pickles(folder: Path) -> tuple[Split, Split]:
    """(train, test) from `folder/cifar-10-batches-py` (or folder itself holding the batches)."""
    folder = Path(folder)
    batch_dir = folder / BATCH_DIR if (folder / BATCH_DIR).is_dir() else folder
    classes = CLASSES
    if (batch_dir / META).is_file():
        meta = read_batch(_safe_file(batch_dir, META))
        names = meta.get("label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    parts = [_batch_arrays(_safe_file(batch_dir, name)) for name in TRAIN_BATCHES]
    counts = [len(p[1]) for p in parts]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = _batch_arrays(_safe_file(batch_dir, TEST_BATCH))
    full = all(c == OFFICIAL_ROWS for c in counts) and len(y_te) == OFFICIAL_ROWS
    if full:
        variant = f"official: {len(y_tr)} train / {len(y_te)} test"
    else:
        variant = (f"shared subset: {len(y_tr)} train / {len(y_te)} test (first rows of each official "
                   f"batch: train batches {'+'.join(map(str, counts))}, test {len(y_te)})")
    meta = {"variant": variant, "layout": "pickles", "batch_rows": counts + [len(y_te)]}
    root = str(folder)
    return (
        Split(items=x_tr, labels=y_tr, classes=classes, name="cifar10/train", root=root, meta=dict(meta)),
        Split(items=x_te, labels=y_te, classes=classes, name="cifar10/test", root=root, meta=dict(meta)),
    )


def _read_folder_split(folder: Path, side: str, classes: tuple[str, ...] | None,
                       skip_bad: bool) -> tuple[Split, int]:
    base = folder / side
    if classes is None:
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        classes = CLASSES if set(found) == set(CLASSES) else tuple(found)
    images, labels, bad, bad_paths = [], [], 0, []
    from cvbench.errors import BadImageError

    for c, name in enumerate(classes):
        cdir = base / name
        files = sorted(p for p in cdir.iterdir() if p.suffix.lower() in IMAGE_EXTS) if cdir.is_dir() else []
        for path in files:
            try:
                img = load_image(path, mode="rgb")
            except BadImageError:
                if not skip_bad:
                    raise
                bad += 1
                bad_paths.append(str(path))
                continue
            if img.shape[:2] != (32, 32):
                import cv2

                img = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
            images.append(img)
            labels.append(c)
    if not images:
        raise DataError(f"no images under {base}/<class>/*.png|jpg; expected the CIFAR-10 image-folder layout")
    x = np.stack(images).astype(np.uint8)
    split = Split(items=x, labels=np.asarray(labels), classes=classes, name=f"cifar10/{side}",
                  root=str(folder), meta={"layout": "image-folder", "bad_images": bad, **({"bad_paths": bad_paths[:100]} if bad else {})})
    return split, bad


def load_image_folders(folder: Path, skip_bad: bool = False) -> tuple[Split, Split]:
    """(train, test) from `folder/train/<class>/*` and `folder/test/<class>/*`."""
    folder = Path(folder)
    train, _ = _read_folder_split(folder, "train", None, skip_bad)
    test, _ = _read_folder_split(folder, "test", train.classes, skip_bad)
    variant = (f"official: {len(train)} train / {len(test)} test (image folders)"
               if (len(train), len(test)) == (50000, 10000)
               else f"image folders: {len(train)} train / {len(test)} test")
    for s in (train, test):
        s.meta["variant"] = variant
    return train, test


def read(folder: Path, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
    """Task reader: the pickle layout when present, else the image-folder layout."""
    folder = Path(folder)
    if (folder / BATCH_DIR).is_dir() or (folder / TRAIN_BATCHES[0]).is_file():
        return load_pickles(folder)
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return load_image_folders(folder, skip_bad=skip_bad)
    raise DataError(
        f"no CIFAR-10 data in {folder}: expected {BATCH_DIR}/data_batch_1..5 + test_batch (official "
        "python pickles) or train/<class>/*.png and test/<class>/*.png"
    )
