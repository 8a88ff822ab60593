"""Hotel-ID readers (Kaggle 2022 FGVC9 and 2021 FGVC8 layouts) and a generated fixture.

2022: `train_images/<hotel_id>/<image>.jpg` plus `train_masks/*.png` (occluder shapes).
2021: `train.csv` (image, chain, hotel_id, timestamp) plus `train_images/<chain>/<image>`.
The layout is detected from the folder. Kaggle's test images carry no labels, so the
benchmark's test split is held out from the training images per hotel: every test hotel
keeps training images (single-image hotels stay in training and are counted in meta).

No Hotel-ID data can be had on the project machines, so `generate_fixture` writes a
synthetic dataset in the 2022 (or 2021) layout: each hotel is a procedural room (wall
colour and pattern, carpet, bed, headboard, picture, curtains, lamps) shown from two walls
with random viewpoint, crop, lighting, noise and JPEG compression. A fixture folder holds
FIXTURE.md, and every split read from it says "GENERATED FIXTURE" in its variant.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.errors import DataError
from cvbench.images import is_image_file
from cvbench.split import Split
from cvbench.tasks import config, folder_description

FIXTURE_MARKER = "FIXTURE.md"
FIXTURE_LABEL = "GENERATED FIXTURE (synthetic rooms, NOT Hotel-ID data)"
LAYOUT = config("hotelid")["layout"]
CSV_COLUMNS_2021 = ("image", "chain", "hotel_id", "timestamp")


# ----------------------------------------------------------------------------------- readers
def detect_layout(folder: str | Path) -> str:
    """'2021' when train.csv is present, '2022' when train_images/ holds folders, else DataError."""
    folder = Path(folder)
    if (folder / "train.csv").is_file():
        return "2021"
    if (folder / "train_images").is_dir():
        return "2022"
    raise DataError(f"{folder}: no Hotel-ID data found; expected {LAYOUT}")


def _sort_ids(ids) -> list[str]:
    """Hotel ids sorted numerically when they all are integers, else as strings."""
    ids = sorted(set(ids))
    if all(i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return ids


def read_2022(folder: str | Path) -> tuple[list[str], list[str], dict[str, Any]]:
    """(paths, hotel ids, facts) of a 2022 release: one sub-folder of train_images per hotel."""
    folder = Path(folder)
    images = folder / "train_images"
    if not images.is_dir():
        raise DataError(f"{images}: missing; expected {LAYOUT}")
    paths, ids, empty, stray = [], [], [], []
    for sub in sorted(images.iterdir()):
        if not sub.is_dir():
            stray.append(sub.name)
            continue
        files = sorted(p for p in sub.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            empty.append(sub.name)
        paths += [str(p) for p in files]
        ids += [sub.name] * len(files)
    if not paths:
        raise DataError(f"{images}: no images found; expected train_images/<hotel_id>/*.jpg")
    facts = {"layout": "hotel-id-2022", "empty_hotel_folders": len(empty),
             "files_outside_hotel_folders": len(stray)}
    return paths, ids, facts


def read_2021(folder: str | Path, skip_missing: bool = False) -> tuple[list[str], list[str], dict[str, Any]]:
    """(paths, hotel ids, facts) of a 2021 release from train.csv; bad rows and missing files
    raise DataError naming file and line (missing files are dropped and counted with skip_missing)."""
    folder = Path(folder)
    table = folder / "train.csv"
    paths, ids, chains, missing = [], [], [], []
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{table}: empty file; expected a header {','.join(CSV_COLUMNS_2021)}")
        header = [h.strip().lstrip("\ufeff") for h in header]
        absent = [c for c in CSV_COLUMNS_2021 if c not in header]
        if absent:
            raise DataError(f"{table}:1: header lacks column {absent[0]!r}; expected {','.join(CSV_COLUMNS_2021)}")
        col = {c: header.index(c) for c in CSV_COLUMNS_2021}
        for lineno, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise DataError(f"{table}:{lineno}: expected {len(header)} fields, found {len(row)}: {row}")
            image, chain, hotel = (row[col[c]].strip() for c in ("image", "chain", "hotel_id"))
            if not hotel.isdigit():
                raise DataError(f"{table}:{lineno}: hotel_id {hotel!r} is not an integer")
            if not chain.isdigit():
                raise DataError(f"{table}:{lineno}: chain {chain!r} is not an integer")
            if not image:
                raise DataError(f"{table}:{lineno}: empty image name")
            path = folder / "train_images" / chain / image
            if not path.is_file():
                if not skip_missing:
                    raise DataError(f"{table}:{lineno}: image file {path} does not exist")
                missing.append(str(path))
                continue
            paths.append(str(path))
            ids.append(hotel)
            chains.append(int(chain))
    if not paths:
        raise DataError(f"{table}: no usable rows")
    facts = {"layout": "hotel-id-2021", "missing_files_skipped": len(missing), "chain": chains}
    return paths, ids, facts


def split_per_hotel(
    ids: list[str], seed: int = 0, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, int]:
    """Seeded per-hotel hold-out: a hotel with n >= 2 images gives min(n - 1, max(1,
    round(test_fraction * n))) of them to test; single-image hotels stay in training.

    Returns (train indices, test indices, number of single-image hotels)."""
    order = {h: i for i, h in enumerate(_sort_ids(ids))}
    codes = np.fromiter((order[i] for i in ids), dtype=np.int64, count=len(ids))
    counts = np.bincount(codes, minlength=len(order))
    n_test = np.where(counts >= 2,
                      np.minimum(counts - 1, np.maximum(1, np.round(test_fraction * counts))), 0)
    # a random rank within each hotel: sort by (hotel, random key)
    key = np.random.default_rng(seed).random(len(codes))
    by_hotel = np.lexsort((key, codes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), np.int64)
    rank[by_hotel] = np.arange(len(codes)) - starts[codes[by_hotel]]
    is_test = rank < n_test[codes]
    return np.flatnonzero(~is_test), np.flatnonzero(is_test), int((counts == 1).sum())


def read(
    folder: str | Path, seed: int = 0, skip_bad: bool = False, test_fraction: float = 0.2
) -> tuple[Split, Split]:
    """Read a Hotel-ID folder (layout detected) into the benchmark's (train, test) splits.

    Classes are all hotel ids; split.meta carries the layout, the masks folder
    ("masks_dir", None when absent), the number of masks and of single-image hotels, and a
    variant string that says "GENERATED FIXTURE" for a generated folder.
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    if layout == "2021":
        paths, ids, facts = read_2021(folder, skip_missing=skip_bad)
    else:
        paths, ids, facts = read_2022(folder)
    chains = facts.pop("chain", None)
    classes = _sort_ids(ids)
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup[i] for i in ids], dtype=np.int64)
    tr, te, singles = split_per_hotel(ids, seed=seed, test_fraction=test_fraction)
    masks_dir = folder / "train_masks"
    from .occlusion import list_masks

    n_masks = len(list_masks(masks_dir))
    fixture = (folder / FIXTURE_MARKER).is_file()
    n_test_hotels = len(np.unique(labels[te]))
    what = FIXTURE_LABEL if fixture else (folder_description(folder) or f"Hotel-ID {layout}")
    variant = (
        f"{what}: {len(classes)} hotels, {len(paths)} images; per-hotel hold-out "
        f"{len(tr)} train / {len(te)} test ({n_test_hotels} test hotels, {singles} "
        f"single-image hotels train-only); {n_masks} occlusion masks"
    )
    meta = {
        **facts,
        "variant": variant,
        "fixture": fixture,
        "masks_dir": masks_dir if n_masks else None,  # a Path: kept out of records (machine-specific)
        "n_masks": n_masks,
        "single_image_hotels": singles,
        "test_fraction": test_fraction,
        "split_seed": seed,
        "skip_bad": skip_bad,  # deep decoding then turns unreadable images into blanks
    }
    full = Split(items=paths, labels=labels, classes=classes, name="hotelid/all",
                 groups={"chain": np.asarray(chains)} if chains is not None else {},
                 root=str(folder), meta=meta)
    return full.subset(tr, name="hotelid/train"), full.subset(te, name="hotelid/test")


# ----------------------------------------------------------------------------------- fixture
def _hsv(rng: np.random.Generator, s=(0.2, 0.8), v=(0.35, 0.95)) -> np.ndarray:
    """A random RGB colour (float 0..255) from hue/saturation/value ranges."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v))
    return np.array([r, g, b]) * 255


def _hotel_style(rng: np.random.Generator, chain_style: dict | None) -> dict:
    """Colours, patterns and furniture geometry of one hotel (partly inherited from its chain)."""
    base = chain_style or {}

    def pick(key, fn):  # a chain trait, kept with probability 0.6
        return base[key] if key in base and rng.random() < 0.6 else fn()

    return {
        "wall": _hsv(rng, (0.05, 0.5), (0.55, 0.95)),
        "wall_pattern": pick("wall_pattern", lambda: int(rng.integers(0, 4))),
        "wall_accent": _hsv(rng, (0.1, 0.7), (0.3, 0.9)),
        "period": int(rng.integers(5, 14)),
        "floor": _hsv(rng, (0.1, 0.7), (0.15, 0.6)),
        "bed_x": pick("bed_x", lambda: rng.uniform(0.3, 0.7)),
        "bed_w": pick("bed_w", lambda: rng.uniform(0.35, 0.55)),
        "duvet": _hsv(rng, (0.0, 0.4), (0.7, 1.0)),
        "runner": _hsv(rng, (0.4, 0.9), (0.3, 0.8)),
        "headboard": _hsv(rng, (0.2, 0.8), (0.15, 0.7)),
        "headboard_shape": pick("headboard_shape", lambda: int(rng.integers(0, 3))),
        "art": [(_hsv(rng), rng.uniform(0, 1, 4)) for _ in range(int(rng.integers(2, 5)))],
        "art_y": rng.uniform(0.12, 0.3),
        "curtain": _hsv(rng, (0.2, 0.8), (0.2, 0.8)),
        "desk": _hsv(rng, (0.2, 0.6), (0.15, 0.55)),
        "lamp": _hsv(rng, (0.0, 0.3), (0.8, 1.0)),
        "window_x": rng.uniform(0.15, 0.6),
    }


def _render_view(style: dict, view: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One wall of a hotel room as float RGB (H, W, 3): view 0 bed wall, view 1 window/desk wall."""
    import cv2

    w, h = size
    img = np.empty((h, w, 3), np.float32)
    horizon = int(0.62 * h)
    img[:] = style["wall"]
    yy, xx = np.mgrid[0:h, 0:w]
    per = style["period"] * w / 160
    pattern = style["wall_pattern"]
    if pattern == 1:  # vertical stripes
        sel = (xx // max(1, int(per))) % 2 == 0
    elif pattern == 2:  # diamonds
        sel = ((xx + yy) // max(1, int(per)) + (xx - yy) // max(1, int(per))) % 2 == 0
    elif pattern == 3:  # wainscot band
        sel = (yy > 0.4 * h) & (yy < 0.45 * h)
    else:
        sel = np.zeros((h, w), bool)
    img[sel & (yy < horizon)] = 0.75 * style["wall"] + 0.25 * style["wall_accent"]
    img[horizon:] = style["floor"]
    carpet = rng.normal(0, 6, size=(h - horizon, w, 1))
    img[horizon:] += carpet
    img[horizon: horizon + max(1, h // 60)] = 0.6 * style["floor"]  # skirting

    def colour(c):  # OpenCV wants a tuple of floats
        return tuple(float(v) for v in c)

    if view == 0:
        bx, bw = style["bed_x"] * w, style["bed_w"] * w
        x0, x1 = int(bx - bw / 2), int(bx + bw / 2)
        top = int(0.36 * h)
        shape = style["headboard_shape"]
        if shape == 0:
            cv2.rectangle(img, (x0, top), (x1, horizon), colour(style["headboard"]), -1)
        elif shape == 1:
            cv2.ellipse(img, (int(bx), int(0.48 * h)), (int(bw / 2), int(0.14 * h)), 0, 180, 360,
                        colour(style["headboard"]), -1)
            cv2.rectangle(img, (x0, int(0.48 * h)), (x1, horizon), colour(style["headboard"]), -1)
        else:
            for k in range(5):
                xa = x0 + k * (x1 - x0) // 5
                cv2.rectangle(img, (xa + 1, top), (xa + (x1 - x0) // 5 - 1, horizon),
                              colour(style["headboard"]), -1)
        bed_top = int(0.55 * h)
        cv2.rectangle(img, (x0 - w // 40, bed_top), (x1 + w // 40, int(0.85 * h)), colour(style["duvet"]), -1)
        cv2.rectangle(img, (x0 - w // 40, int(0.7 * h)), (x1 + w // 40, int(0.76 * h)), colour(style["runner"]), -1)
        for px in (x0 + bw * 0.25, x0 + bw * 0.75):  # pillows
            cv2.ellipse(img, (int(px), int(0.57 * h)), (int(bw * 0.18), int(0.035 * h)), 0, 0, 360,
                        colour(0.95 * style["duvet"] + 12), -1)
        for sx in (x0 - int(0.12 * w), x1 + int(0.04 * w)):  # nightstands + lamps
            cv2.rectangle(img, (sx, int(0.58 * h)), (sx + int(0.08 * w), int(0.7 * h)), colour(style["desk"]), -1)
            cv2.ellipse(img, (sx + int(0.04 * w), int(0.5 * h)), (int(0.03 * w), int(0.04 * h)), 0, 0, 360,
                        colour(style["lamp"]), -1)
        ay = style["art_y"] * h
        ax0, ax1 = int(bx - bw * 0.3), int(bx + bw * 0.3)
        cv2.rectangle(img, (ax0 - 2, int(ay) - 2), (ax1 + 2, int(ay + 0.14 * h) + 2), (40, 30, 20), -1)
        for col, (u0, v0, u1, v1) in style["art"]:
            cv2.rectangle(img, (int(ax0 + u0 * (ax1 - ax0) * 0.6), int(ay + v0 * 0.07 * h)),
                          (int(ax0 + (0.4 + u1 * 0.6) * (ax1 - ax0)), int(ay + (0.07 + v1 * 0.07) * h)),
                          colour(col), -1)
    else:
        wx0 = int(style["window_x"] * w)
        wx1 = wx0 + int(0.3 * w)
        cv2.rectangle(img, (wx0, int(0.12 * h)), (wx1, int(0.55 * h)), (200, 220, 240), -1)
        cv2.line(img, ((wx0 + wx1) // 2, int(0.12 * h)), ((wx0 + wx1) // 2, int(0.55 * h)), (90, 90, 90), 1)
        for cx0 in (wx0 - int(0.08 * w), wx1):
            cv2.rectangle(img, (cx0, int(0.08 * h)), (cx0 + int(0.08 * w), int(0.66 * h)), colour(style["curtain"]), -1)
        dx = wx1 + int(0.14 * w) if wx1 + int(0.4 * w) < w else max(0, wx0 - int(0.45 * w))
        cv2.rectangle(img, (dx, int(0.5 * h)), (dx + int(0.3 * w), int(0.54 * h)), colour(style["desk"]), -1)
        cv2.rectangle(img, (dx + int(0.02 * w), int(0.54 * h)), (dx + int(0.05 * w), int(0.72 * h)),
                      colour(style["desk"]), -1)
        cv2.rectangle(img, (dx + int(0.25 * w), int(0.54 * h)), (dx + int(0.28 * w), int(0.72 * h)),
                      colour(style["desk"]), -1)
        cv2.rectangle(img, (dx + int(0.08 * w), int(0.3 * h)), (dx + int(0.22 * w), int(0.46 * h)),
                      colour(style["wall_accent"] * 0.5), -1)  # mirror / TV
    return img


def _photograph(room: np.ndarray, out_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random 'phone photo' of a rendered room: viewpoint crop, tilt, lighting, noise."""
    import cv2

    h, w = room.shape[:2]
    scale = rng.uniform(0.6, 0.9)
    cw, ch = scale * w, scale * h
    cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
    angle = rng.normal(0, 3)
    ow, oh = out_size
    m = cv2.getRotationMatrix2D((cx, cy), angle, ow / cw)
    m[0, 2] += ow / 2 - cx
    m[1, 2] += oh / 2 - cy
    img = cv2.warpAffine(room, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.7, 1.25) * rng.uniform(0.9, 1.1, size=3)  # exposure + white balance
    img = img * gain
    ramp = np.linspace(rng.uniform(-25, 25), rng.uniform(-25, 25), ow)[None, :, None]  # lamp light
    img = img + ramp + rng.normal(0, rng.uniform(2, 8), size=img.shape)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _person_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A person-like occluder silhouette (uint8 0/255) for train_masks."""
    import cv2

    w, h = size
    m = np.zeros((h, w), np.uint8)
    ph = rng.uniform(0.5, 0.95) * h
    cx = rng.uniform(0.2, 0.8) * w
    top = h - ph * rng.uniform(0.7, 1.0)
    cv2.ellipse(m, (int(cx), int(top + 0.1 * ph)), (int(0.07 * ph), int(0.09 * ph)), 0, 0, 360, 255, -1)
    cv2.ellipse(m, (int(cx), int(top + 0.42 * ph)), (int(0.2 * ph), int(0.27 * ph)), 0, 0, 360, 255, -1)
    arm = rng.uniform(-40, 40)
    cv2.ellipse(m, (int(cx + 0.15 * ph), int(top + 0.4 * ph)), (int(0.04 * ph), int(0.2 * ph)), arm, 0, 360, 255, -1)
    cv2.ellipse(m, (int(cx - 0.15 * ph), int(top + 0.4 * ph)), (int(0.04 * ph), int(0.2 * ph)), -arm, 0, 360, 255, -1)
    cv2.rectangle(m, (int(cx - 0.15 * ph), int(top + 0.6 * ph)), (int(cx + 0.15 * ph), h), 255, -1)
    return m


def generate_fixture(
    dest: str | Path,
    n_hotels: int = 40,
    images_per_hotel: tuple[int, int] = (3, 8),
    n_masks: int = 20,
    seed: int = 0,
    size: tuple[int, int] = (128, 96),
    layout: str = "2022",
) -> Path:
    """Write a synthetic Hotel-ID dataset into `dest` (official `layout` "2022" or "2021").

    n_hotels hotels (grouped in chains of 5 that share decor traits), U(images_per_hotel)
    JPEG photos each (size (w, h), one in five portrait), n_masks person-like PNG masks in
    train_masks/ (occluder 255 on 0), and FIXTURE.md. Same arguments, same bytes.
    """
    from PIL import Image

    from cvbench.atomic import atomic_write_bytes, atomic_write_text

    if layout not in ("2022", "2021"):
        raise ValueError(f"layout must be '2022' or '2021', got {layout!r}")
    lo, hi = images_per_hotel
    if not 1 <= lo <= hi:
        raise ValueError(f"images_per_hotel must be (lo, hi) with 1 <= lo <= hi, got {images_per_hotel}")
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    hotel_ids = np.sort(rng.choice(np.arange(10_000, 99_999), size=n_hotels, replace=False))
    chains: dict[int, dict] = {}
    rows = []
    w, h = size
    for k, hotel in enumerate(hotel_ids):
        chain = k // 5
        chain_style = chains.setdefault(chain, _hotel_style(rng, None))
        style = _hotel_style(rng, chain_style)
        rooms = [_render_view(style, v, (int(1.4 * w), int(1.4 * h)), rng) for v in (0, 1)]
        for _ in range(int(rng.integers(lo, hi + 1))):
            view = int(rng.random() < 0.3)
            out = (h, w) if rng.random() < 0.2 else (w, h)
            img = _photograph(rooms[view], out, rng)
            name = f"{rng.integers(0, 2**63):016x}.jpg"
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
            sub = str(hotel) if layout == "2022" else str(chain)
            atomic_write_bytes(dest / "train_images" / sub / name, buf.getvalue())
            rows.append((name, chain, int(hotel), f"2019-0{1 + k % 9}-1{k % 10} 12:00:00"))
    for i in range(n_masks):
        buf = io.BytesIO()
        Image.fromarray(_person_mask(size, rng)).save(buf, format="PNG")
        atomic_write_bytes(dest / "train_masks" / f"{i:05d}.png", buf.getvalue())
    if layout == "2021":
        lines = [",".join(CSV_COLUMNS_2021)] + [f"{a},{b},{c},{d}" for a, b, c, d in rows]
        atomic_write_text(dest / "train.csv", "\n".join(lines) + "\n")
    atomic_write_text(dest / FIXTURE_MARKER, (
        f"# {FIXTURE_LABEL}\n\nWritten by cvbench.tasks.hotelid.reader.generate_fixture(n_hotels={n_hotels}, "
        f"images_per_hotel={tuple(images_per_hotel)}, n_masks={n_masks}, seed={seed}, size={tuple(size)}, "
        f"layout={layout!r}).\nProcedural hotel rooms in the official Hotel-ID {layout} layout, for tests "
        "and demos. Results on this folder say nothing about real hotel recognition.\n"))
    return dest
