"""Image decode (cvbench.images.load_image) of ten scene15-sized JPEGs per round: to
grayscale, to RGB, and with JPEG draft-mode reduction (max_side). Guarded by
`pytest --benchmark`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvbench.images import load_image


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:300]
    paths = []
    for i in range(10):
        img = np.stack([xx * 0.8 + 30 * np.sin(yy / (5.0 + i)), yy * 0.9, (xx + yy) * 0.45], -1)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"im_{i}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.mark.parametrize("mode,max_side", [("gray", None), ("rgb", None), ("rgb", 128)],
                         ids=["gray", "rgb", "rgb-max128"])
def test_bench_load_image(benchmark, jpegs, mode, max_side):
    out = benchmark(lambda: [load_image(p, mode, max_side=max_side) for p in jpegs])
    side = max(out[0].shape[:2])
    assert len(out) == 10 and (side <= 128 if max_side else side == 300)
    assert out[0].ndim == (2 if mode == "gray" else 3)
