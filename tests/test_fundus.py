"""Fundus preprocessing: border crop, square resize, Ben Graham filter, exposure rule, caching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from cvbench.split import Split
from cvbench.tasks.retinopathy import fundus


def synthetic_fundus(h: int = 300, w: int = 400, cy: int = 140, cx: int = 250, r: int = 100) -> np.ndarray:
    """A bright textured disc on black, off-centre, like a fundus photo with a wide border."""
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (cx, cy), r, (180, 90, 40), thickness=-1)
    img[cy - 5:cy + 5, cx - 60:cx + 60] = (40, 20, 10)  # a dark "vessel" inside the disc
    img[3, 3] = (255, 255, 255)  # one hot pixel in the border must not widen the box
    return img


def test_retina_bbox_finds_offset_disc():
    img = synthetic_fundus()
    y0, y1, x0, x1 = fundus.retina_bbox(img)
    assert abs(y0 - 40) <= 2 and abs(y1 - 241) <= 2
    assert abs(x0 - 150) <= 2 and abs(x1 - 351) <= 2


def test_crop_border_removes_black_and_centres_disc():
    crop = fundus.crop_border(synthetic_fundus())
    assert abs(crop.shape[0] - 201) <= 3 and abs(crop.shape[1] - 201) <= 3
    gray = crop.mean(axis=2)
    assert gray[crop.shape[0] // 4, crop.shape[1] // 2] > 50  # disc inside
    assert gray[:5, :5].max() < 10  # corners of the disc's box stay black


def test_retina_bbox_of_black_image_is_whole_image():
    assert fundus.retina_bbox(np.zeros((20, 30), np.uint8)) == (0, 20, 0, 30)


def test_pad_to_square_keeps_aspect():
    img = np.full((50, 100, 3), 200, np.uint8)
    sq = fundus.pad_to_square(img)
    assert sq.shape == (100, 100, 3)
    assert sq[:25].max() == 0 and sq[75:].max() == 0 and sq[25:75].min() == 200


@pytest.mark.parametrize("mode", fundus.PREPROCESS_MODES)
def test_preprocess_shapes(mode):
    out = fundus.preprocess_fundus(synthetic_fundus(), 64, mode)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_preprocess_crop_fills_frame_with_retina():
    none = fundus.preprocess_fundus(synthetic_fundus(), 64, "none").mean(axis=2)
    crop = fundus.preprocess_fundus(synthetic_fundus(), 64, "crop").mean(axis=2)
    # after cropping the disc spans the frame: bright at left/right middle edges
    assert crop[32, 2] > 50 and crop[32, 61] > 50
    assert (crop > 20).mean() > (none > 20).mean() + 0.2
    with pytest.raises(ValueError):
        fundus.preprocess_fundus(synthetic_fundus(), 64, "bogus")


def test_local_average_subtraction_flat_image_is_mid_grey():
    out = fundus.local_average_subtraction(np.full((60, 60, 3), 77, np.uint8))
    assert np.all(out == 128)
    edge = np.zeros((60, 60, 3), np.uint8)
    edge[:, 30:] = 200
    out = fundus.local_average_subtraction(edge, mask_circle=False)
    assert out[30, 31].mean() > 200 and out[30, 28].mean() < 60  # the edge is amplified


def _image_with(value: int, count: int, rest: int = 128, n: int = 1000) -> np.ndarray:
    img = np.full(n, rest, np.uint8)
    img[:count] = value
    return img.reshape(10, n // 10)


@pytest.mark.parametrize(("value", "count", "expected"), [
    (30, 900, "under"),   # exactly 90% in [0, 30]
    (30, 899, "ok"),      # just below 90%
    (31, 950, "ok"),      # 31 is outside [0, 30]
    (0, 1000, "under"),
    (225, 800, "over"),   # exactly 80% in [225, 255]
    (225, 799, "ok"),
    (224, 900, "ok"),     # 224 is outside [225, 255]
    (255, 1000, "over"),
])
def test_exposure_rule_thresholds(value, count, expected):
    assert fundus.exposure_status(_image_with(value, count)) == expected


def test_exposure_status_on_rgb_uses_grey():
    rgb = np.repeat(_image_with(10, 950)[..., None], 3, axis=2)
    assert fundus.exposure_status(rgb) == "under"


def _path_split(tmp_path, n: int = 6, size: tuple[int, int] = (120, 90)) -> Split:
    paths = []
    for i in range(n):
        img = synthetic_fundus(h=size[1], w=size[0], cy=size[1] // 2, cx=size[0] // 2 + i,
                               r=min(size) // 3)
        if i == 0:
            img[:] = 5  # under-exposed
        p = tmp_path / f"{i}_left.jpeg"
        Image.fromarray(img).save(p, quality=95)
        paths.append(p)
    return Split(items=paths, labels=np.arange(n) % 5, classes=tuple("01234"), name="t/train",
                 groups={"patient": np.array([str(i) for i in range(n)], dtype=object)})


def test_exposure_screen_and_counts(tmp_path):
    split = _path_split(tmp_path)
    status = fundus.exposure_screen(split)
    assert status[0] == "under" and set(status[1:]) == {"ok"}
    assert fundus.exposure_counts(status) == {"checked": 6, "under": 1, "over": 0}
    assert list(fundus.exposure_screen(split)) == list(status)  # second call from the cache
    assert list(fundus.cache_dir("fundus").glob(f"exposure-{split.cache_key}-*.npz"))


def test_prepare_fundus_in_memory_and_cached(tmp_path):
    split = _path_split(tmp_path, size=(1600, 1200))  # large JPEGs decode in draft mode
    prepared = fundus.prepare_fundus(split, 32, "crop+ben")
    assert prepared.in_memory and prepared.items.shape == (6, 32, 32, 3)
    assert np.array_equal(prepared.labels, split.labels)
    assert list(prepared.groups["patient"]) == list(split.groups["patient"])
    assert prepared.meta["preprocess"] == "fundus crop+ben at 32x32"
    assert prepared.fingerprint != split.fingerprint
    cached = list(fundus.cache_dir("fundus").glob(f"prepared-{split.cache_key}-*.npz"))
    assert len(cached) == 1
    again = fundus.prepare_fundus(split, 32, "crop+ben")
    assert np.array_equal(again.items, prepared.items)
    other = fundus.prepare_fundus(split, 32, "crop")
    assert not np.array_equal(other.items, prepared.items)


def test_prepare_fundus_bad_image(tmp_path):
    split = _path_split(tmp_path, n=2)
    (tmp_path / "1_left.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(fundus.BadImageError):
        fundus.prepare_fundus(split, 16, "crop")
    ok = fundus.prepare_fundus(split, 16, "crop", skip_bad=True)
    assert ok.meta["bad_images_zeroed"] == 1 and ok.items[1].max() == 0


def test_lesion_statistics_see_bright_spots():
    base = fundus.preprocess_fundus(synthetic_fundus(), 128, "crop")
    spotted = base.copy()
    for cy, cx in ((40, 50), (70, 80), (90, 40), (60, 60)):
        cv2.circle(spotted, (cx, cy), 2, (250, 250, 200), -1)
    a, b = fundus.lesion_statistics(base), fundus.lesion_statistics(spotted)
    assert a.shape == b.shape == (90,) and np.isfinite(a).all()
    assert b[19] > a[19]  # share of scale-1 responses above 5 sd grows with bright spots
