"""The offline demo task: scikit-learn's bundled handwritten digits, upsampled to 32x32.

It needs no download, so `make demo` works on a fresh machine without a network. It is a
demonstration of the harness, not one of the five benchmark tasks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvbench.split import Split
from cvbench.tasks import classes_of

DIGIT_CLASSES = classes_of("demo")


def read(folder: Path | None = None, seed: int = 0, skip_bad: bool = False,
                       size: int = 32, test_fraction: float = 1 / 3) -> tuple[Split, Split]:
    """Digits 8x8 (0..16) -> uint8 RGB size x size, stratified train/test split (seed 0 fixed)."""
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    imgs = (digits.images / 16.0 * 255.0).astype(np.float32)
    up = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in imgs])
    up = np.clip(up + 0.5, 0, 255).astype(np.uint8)
    rgb = np.repeat(up[..., None], 3, axis=3)
    idx = np.arange(len(rgb))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=digits.target, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    variant = f"scikit-learn digits upsampled to {size}x{size}: {len(tr)} train / {len(te)} test"
    meta = {"variant": variant}
    return (
        Split(rgb[tr], digits.target[tr], DIGIT_CLASSES, "demo/train", meta=meta),
        Split(rgb[te], digits.target[te], DIGIT_CLASSES, "demo/test", meta=meta),
    )
