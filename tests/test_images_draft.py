"""Decode at the size you need (issue 24): every decode that resizes to a fixed size (the
embeddings' `load_batch`, `Split.pixels`) decodes JPEGs through the decoder's reduced-size
mode, and the result stays close to a full decode + the same resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvbench import images
from cvbench.deep.embeddings import load_batch, prepare
from cvbench.images import decode_item, fixed_size_draft, load_image
from cvbench.split import Split


def photo(path, w: int, h: int, seed: int = 0, gray: bool = False):
    """A photograph-like JPEG: smooth shapes, edges and fine texture."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC).astype(np.float32)
    texture = 12 * (np.sin(np.arange(w, dtype=np.float32) / 9)[None, :]
                    + np.sin(np.arange(h, dtype=np.float32) / 13)[:, None])
    base += texture[..., None] + rng.standard_normal(base.shape, dtype=np.float32) * 6
    base[h // 3 : h // 2, w // 4 : w // 2] = 240  # a sharp-edged bright block
    img = np.clip(base, 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    (im.convert("L") if gray else im).save(path, quality=90)
    return path


def full_reference(path, size: int) -> np.ndarray:
    """Full decode, then the same one-step resize."""
    return prepare(load_image(path, "rgb"), size)


@pytest.fixture
def large(tmp_path):
    return photo(tmp_path / "large.jpg", 1200, 800)


def test_draft_decodes_reduced_and_close_to_full_decode(large):
    got = decode_item(large, draft=fixed_size_draft(128), mode="native")
    assert got.shape == (400, 600, 3)  # 1/2 scale: 1/4 would drop below 256 on the short side
    assert decode_item(large, draft=fixed_size_draft(64)).shape == (200, 300, 3)  # 1/4
    for size in (64, 128):
        fast = prepare(decode_item(large, draft=fixed_size_draft(size)), size).astype(int)
        diff = np.abs(fast - full_reference(large, size))
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 10, (size, diff.mean())


def test_no_reduction_below_four_times_the_target(tmp_path):
    """Images under 4x the target on a side decode in full: the same pixels as before."""
    small = photo(tmp_path / "s.jpg", 500, 300)
    for size in (96, 128, 224):
        np.testing.assert_array_equal(load_batch([small], size)[0], full_reference(small, size))


def test_gray_files_resize_one_channel_with_the_same_pixels(tmp_path):
    g = photo(tmp_path / "g.jpg", 300, 200, gray=True)
    assert decode_item(g, mode="native").ndim == 2
    batch = load_batch([g, g], 64, "crop")
    np.testing.assert_array_equal(batch[0], prepare(load_image(g, "rgb"), 64, "crop"))
    assert (batch[..., 0] == batch[..., 2]).all()


def test_png_is_never_drafted(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_item(tmp_path / "p.png", draft=(32, 32)), arr)


def test_every_fixed_size_decode_path_drafts(large, tmp_path, monkeypatch):
    """load_batch (embeddings) and Split.pixels ask the decoder for fixed_size_draft."""
    seen = []
    real = images._decode_pil

    def spy(path, mode, max_side, draft):
        seen.append(draft)
        return real(path, mode, max_side, draft)

    monkeypatch.setattr(images, "_decode_pil", spy)
    load_batch([large], 96)
    assert seen == [fixed_size_draft(96)]
    seen.clear()
    split = Split(items=[large, large], labels=np.array([0, 1]), classes=("a", "b"),
                  name="t/train", root=str(tmp_path))
    px = split.pixels(32, "rgb", n_jobs=1)
    assert seen == [fixed_size_draft(32)] * 2 and px.shape == (2, 32, 32, 3)
    diff = np.abs(px[0].astype(int) - full_reference(large, 32))
    assert diff.mean() < 2.0
