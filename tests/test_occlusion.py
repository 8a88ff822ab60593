"""Occlusion masks: reading, generating, pasting, filling, occluded copies of splits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvbench.derived import item_rng, with_augmented_copy
from cvbench.errors import BadImageError, UserError
from cvbench.split import Split
from cvbench.tasks.hotelid.occlusion import (
    FILLS,
    apply_fill,
    generated_masks,
    list_masks,
    occlude,
    pasted_masks,
    read_mask,
)
from cvbench.tasks.hotelid.protocol import _train, occluded_split


def _images(n=6, h=40, w=56, seed=0):
    """Random images with no pure black or red pixel, so any fill is visible."""
    return np.random.default_rng(seed).integers(20, 230, size=(n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fill", FILLS)
def test_fill_changes_only_masked_pixels(fill):
    x = _images()
    masks = generated_masks(len(x), x.shape[1:3], np.random.default_rng(1))
    assert masks.any(axis=(1, 2)).all()
    out = apply_fill(x, masks, fill)
    assert out.dtype == np.uint8 and out.shape == x.shape
    changed = (out != x).any(-1)
    assert not (changed & ~masks).any()  # nothing outside the occluder moves
    if fill in ("black", "red"):
        assert (changed == masks).all()  # and every occluded pixel does
    else:
        assert changed[masks].mean() > 0.8


def test_fill_values():
    x = _images(n=2, h=8, w=8)
    m = np.zeros((2, 8, 8), bool)
    m[:, 2:5, 3:6] = True
    assert (apply_fill(x, m, "red")[m] == [255, 0, 0]).all()
    assert (apply_fill(x, m, "black")[m] == 0).all()
    mean = apply_fill(x, m, "mean")
    expect = np.rint(x[0][~m[0]].mean(0))
    assert np.allclose(mean[0][m[0]], expect)
    gray = apply_fill(x[..., 0], m, "black")
    assert gray.shape == (2, 8, 8) and (gray[m] == 0).all() and (gray[~m] == x[..., 0][~m]).all()
    with pytest.raises(UserError, match="fill"):
        apply_fill(x, m, "blue")


def test_flip_fill_mirrors_the_free_side():
    # occluder in the lower-right: the mirror takes rows above and columns to the left
    x = np.zeros((1, 10, 10, 1), np.uint8)
    x[0, :, :, 0] = np.arange(10)[:, None] * 10 + np.arange(10)[None, :]
    m = np.zeros((1, 10, 10), bool)
    m[0, 7:9, 7:9] = True
    out = apply_fill(x, m, "flip")[0, :, :, 0]
    # pixel (7, 7): vertical mirror across row 7 -> (6, 7) = 67; horizontal -> (7, 6) = 76
    assert out[7, 7] == (67 + 76 + 1) // 2
    # pixel (8, 8): mirrors (5, 8) = 58 and (8, 5) = 85
    assert out[8, 8] == (58 + 85 + 1) // 2


def test_generated_mask_coverage():
    """The statistics quoted in cvbench/data/occlusion.py's docstring."""
    masks = generated_masks(2000, (96, 128), np.random.default_rng(0))
    cover = masks.mean(axis=(1, 2))
    assert abs(cover.mean() - 0.140) < 0.002
    assert abs(np.median(cover) - 0.124) < 0.002
    lo, hi = np.percentile(cover, [10, 90])
    assert abs(lo - 0.062) < 0.002 and abs(hi - 0.243) < 0.002
    assert (cover > 0).mean() > 0.99


def _write_mask(path, arr, mode="L"):
    Image.fromarray(arr, mode=None).convert(mode).save(path)


def test_read_mask_conventions(tmp_path):
    occ = np.zeros((30, 20), bool)
    occ[5:25, 4:12] = True
    # white occluder on black
    Image.fromarray(np.where(occ, 255, 0).astype(np.uint8)).save(tmp_path / "a.png")
    assert (read_mask(tmp_path / "a.png") == occ).all()
    # black occluder on white
    Image.fromarray(np.where(occ, 0, 255).astype(np.uint8)).save(tmp_path / "b.png")
    assert (read_mask(tmp_path / "b.png") == occ).all()
    # red occluder on black, RGB
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[occ] = [255, 0, 0]
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert (read_mask(tmp_path / "c.png") == occ).all()
    # RGBA: alpha defines the occluder whatever the colour
    rgba = np.full((30, 20, 4), 255, np.uint8)
    rgba[..., 3] = np.where(occ, 255, 0)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "d.png")
    assert (read_mask(tmp_path / "d.png") == occ).all()
    (tmp_path / "e.png").write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="e.png"):
        read_mask(tmp_path / "e.png")
    assert list_masks(tmp_path) == [str(tmp_path / f"{c}.png") for c in "abcde"]
    assert list_masks(tmp_path / "absent") == [] and list_masks(None) == []


def test_pasted_masks_use_the_file_shape(tmp_path):
    occ = np.zeros((40, 20), np.uint8)
    occ[:, 5:15] = 255  # a 40 x 10 bar: aspect 4:1
    Image.fromarray(occ).save(tmp_path / "bar.png")
    masks = pasted_masks([str(tmp_path / "bar.png")], 50, (64, 64), np.random.default_rng(0))
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert len(rows) and len(cols)
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a solid box, clipped
        if 0 < rows[0] and rows[-1] < 63 and 0 < cols[0] and cols[-1] < 63:  # not cut by a border
            assert 32 <= h <= 64 and abs(h / w - 4) < 1.0


def test_occlude_probability_and_determinism():
    x = _images(n=200, h=16, w=16)
    out, masks = occlude(x, np.random.default_rng(3), p=0.5)
    hit = masks.any(axis=(1, 2))
    assert 0.35 < hit.mean() < 0.65
    assert (out[~hit] == x[~hit]).all()
    out2, masks2 = occlude(x, np.random.default_rng(3), p=0.5)
    assert (out2 == out).all() and (masks2 == masks).all()
    a = item_rng(0, "train_images/1/a.jpg").random()
    assert a == item_rng(0, "train_images/1/a.jpg").random() != item_rng(1, "train_images/1/a.jpg").random()


def _path_split(tmp_path, n=6):
    x = _images(n=n, h=24, w=32)
    paths = []
    for i, img in enumerate(x):
        p = tmp_path / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return Split(items=paths, labels=np.arange(n) % 3, classes=("a", "b", "c"), name="t/test",
                 root=str(tmp_path / "imgs")), x


def test_occluded_split_is_deterministic_and_subset_stable(tmp_path):
    split, x = _path_split(tmp_path)
    occ = occluded_split(split, seed=5)
    assert len(occ) == len(split) and (occ.labels == split.labels).all()
    assert occ.meta["occlusion"]["source"].startswith("generated masks")
    assert 0 < occ.meta["occlusion"]["covered_mean"] < 1
    imgs = np.stack([occ.image(i) for i in range(len(occ))])
    changed = (imgs != x).any(-1)
    assert changed.any(axis=(1, 2)).all()
    red = (imgs == [255, 0, 0]).all(-1)
    assert (changed == red).all()  # red fill, lossless PNG: exactly the occluder changed
    again = occluded_split(split, seed=5)  # from the cache, same bytes
    assert again.fingerprint == occ.fingerprint
    assert all((again.image(i) == imgs[i]).all() for i in range(len(occ)))
    other = occluded_split(split, seed=6)
    assert other.fingerprint != occ.fingerprint
    sub = occluded_split(split.subset([4, 1]), seed=5)  # an item is occluded the same way in a subset
    assert (sub.image(0) == imgs[4]).all() and (sub.image(1) == imgs[1]).all()


def test_occluded_in_memory_split_and_training_copy(tmp_path):
    x = _images(n=4, h=12, w=12)
    mem = Split(items=x, labels=[0, 1, 0, 1], classes=("a", "b"), name="m/train")
    occ = occluded_split(mem, seed=1, fill="black")
    assert occ.in_memory and occ.items.shape == x.shape
    assert ((occ.items != x).any(-1) == (occ.items == 0).all(-1)).all()
    both = with_augmented_copy(_train(mem, "masks", 0), seed=1)  # the condition's copy (red, p = 1)
    assert len(both) == 8 and (both.labels == [0, 1, 0, 1, 0, 1, 0, 1]).all()
    assert (both.items[:4] == x).all() and ((both.items[4:] != x).any(-1) == (both.items[4:] == [255, 0, 0]).all(-1)).all()
    assert (both.items[4:] != x).any(axis=(1, 2, 3)).all() and both.augment is None
    split, _ = _path_split(tmp_path, n=3)
    both = with_augmented_copy(_train(split, "masks", 0), seed=2)
    assert len(both) == 6 and list(both.items[:3]) == list(split.items)
    assert both.fingerprint != split.fingerprint
