"""Readers for diabetic-retinopathy grading sets: Kaggle EyePACS 2015 and APTOS 2019.

Both releases grade fundus photographs 0-4 (No DR, Mild, Moderate, Severe, Proliferative).
The layout is detected from the files present:

- EyePACS: `trainLabels.csv` (image,level) + `train/<patient>_<left|right>.jpeg`
  (optionally `retinopathy_solution.csv` (image,level,Usage) + `test/`, the labels Kaggle
  published after the competition, used as the test side when present);
- APTOS 2019: `train.csv` (id_code,diagnosis) + `train_images/<id_code>.png`.

When only a labelled train set exists, it is split 80/20 (the study's protocol) by patient,
stratified by grade, with sklearn's StratifiedGroupKFold: both eyes of a patient always land
on the same side. APTOS publishes no patient ids, so each image is its own group there.
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np

from cvbench.errors import BadImageError, DataError
from cvbench.images import is_image_file, load_image, open_image
from cvbench.split import Split
from cvbench.tasks import classes_of, config

from .fundus import exposure_counts, exposure_screen

GRADES = classes_of("retinopathy")
TEST_FRACTION = 0.2
EYEPACS_LAYOUT = "trainLabels.csv (image,level) + train/<patient>_<left|right>.jpeg"
APTOS_LAYOUT = "train.csv (id_code,diagnosis) + train_images/<id_code>.png"
LAYOUT = config("retinopathy")["layout"]
FIXTURE_MARKER = "GENERATED_FIXTURE.txt"
FIXTURE_LABEL = "GENERATED FIXTURE (synthetic fundus images, not real data)"
_EYE = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")


def detect_layout(folder: Path) -> str:
    """'eyepacs' or 'aptos' from the files present; DataError naming both layouts otherwise."""
    folder = Path(folder)
    if (folder / "trainLabels.csv").is_file():
        return "eyepacs"
    if (folder / "train.csv").is_file():
        return "aptos"
    raise DataError(f"{folder} holds neither layout the retinopathy task reads: expected {LAYOUT}")


def _index_images(folder: Path, csv_path: Path) -> dict[str, Path]:
    """Stem -> path of every image file in `folder` (one directory listing, not one stat per row)."""
    if not folder.is_dir():
        raise DataError(f"{csv_path} names images in {folder}, but that folder does not exist")
    return {p.stem: p for p in folder.iterdir() if is_image_file(p)}


def read_label_csv(csv_path: Path, id_col: str, label_col: str, image_dir: Path,
                   skip_missing: bool = False) -> tuple[list[Path], list[int], list[str], int]:
    """Rows of a (id, grade) CSV resolved to image paths.

    Returns (paths, grades, ids, n_missing). A bad header, a grade that is not an integer in
    0..4, a duplicate id or (unless `skip_missing`) a missing image raises DataError naming
    file:line."""
    images = _index_images(image_dir, csv_path)
    paths, grades, ids, seen, missing = [], [], [], {}, 0
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{csv_path}:1: empty file; expected a header with {id_col},{label_col}")
        header = [h.strip() for h in header]
        if id_col not in header or label_col not in header:
            raise DataError(f"{csv_path}:1: header {','.join(header)!r} lacks {id_col!r} and {label_col!r}")
        i_id, i_label = header.index(id_col), header.index(label_col)
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise DataError(f"{csv_path}:{line}: expected {len(header)} columns, got {len(row)}: {row}")
            name, raw = row[i_id].strip(), row[i_label].strip()
            try:
                grade = int(raw)
            except ValueError:
                raise DataError(f"{csv_path}:{line}: grade {raw!r} is not an integer 0-4") from None
            if not 0 <= grade < len(GRADES):
                raise DataError(f"{csv_path}:{line}: grade {grade} outside 0-4")
            if name in seen:
                raise DataError(f"{csv_path}:{line}: image {name!r} already listed on line {seen[name]}")
            seen[name] = line
            path = images.get(Path(name).stem if is_image_file(name) else name)
            if path is None:
                if skip_missing:
                    missing += 1
                    continue
                raise DataError(f"{csv_path}:{line}: image {name!r} not found in {image_dir}")
            paths.append(path)
            grades.append(grade)
            ids.append(name)
    if not paths:
        raise DataError(f"{csv_path}: no labelled images found")
    return paths, grades, ids, missing


def eyepacs_patients(ids: list[str], csv_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(patient, eye) arrays from EyePACS names `<patient>_<left|right>`."""
    patients, eyes = [], []
    for name in ids:
        m = _EYE.match(name)
        if m is None:
            raise DataError(f"{csv_path}: image {name!r} is not named <patient>_<left|right> as in EyePACS")
        patients.append(m["patient"])
        eyes.append(m["eye"])
    return np.array(patients, dtype=object), np.array(eyes, dtype=object)


def patient_split(labels: np.ndarray, groups: np.ndarray, seed: int = 0,
                  test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): one fold of a seeded StratifiedGroupKFold, so no group (patient)
    straddles the sides and each grade keeps roughly its share."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n_splits = max(2, round(1 / test_fraction))
    x = np.zeros(len(labels))
    if np.bincount(labels).max() >= n_splits:
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "least populated class has only k members": expected
            warnings.simplefilter("ignore", UserWarning)
            train_idx, test_idx = next(cv.split(x, labels, groups))
    else:  # too few items per grade to stratify: a plain seeded group split
        gss = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        train_idx, test_idx = next(gss.split(x, labels, groups))
    return np.sort(train_idx), np.sort(test_idx)


def _image_size_note(paths: list[Path], k: int = 8) -> str:
    """A note when every sampled image is 256x256 (the shared, pre-processed copies)."""
    sizes = set()
    for p in paths[:: max(1, len(paths) // k)][:k]:
        try:
            with open_image(p) as im:
                sizes.add(im.size)
        except (OSError, BadImageError):  # bad files surface when decoded
            continue
    if sizes == {(256, 256)}:
        return ("; images are copies pre-resized to 256x256 (aspect not kept) and colour-processed "
                "before publication, not the original 400x315 to 5184x3456 photographs")
    return ""


def read(folder: Path, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
    """(train, test) Splits of a retinopathy folder in EyePACS or APTOS layout (see module doc).

    groups['patient'] holds the patient id (EyePACS) or the image id (APTOS); groups['exposure']
    the study's exposure screen ('ok' | 'under' | 'over' | 'bad'), counted in meta['exposure']."""
    folder = Path(folder)
    layout = detect_layout(folder)
    official_test = None
    if layout == "eyepacs":
        csv_path = folder / "trainLabels.csv"
        paths, grades, ids, missing = read_label_csv(csv_path, "image", "level", folder / "train", skip_bad)
        patients, eyes = eyepacs_patients(ids, csv_path)
        groups = {"patient": patients, "eye": eyes}
        source = "Kaggle EyePACS 2015"
        solution = folder / "retinopathy_solution.csv"
        if solution.is_file() and (folder / "test").is_dir():
            tp, tg, tids, tmissing = read_label_csv(solution, "image", "level", folder / "test", skip_bad)
            tpat, teye = eyepacs_patients(tids, solution)
            official_test = (tp, tg, {"patient": tpat, "eye": teye}, tmissing)
        group_note = "split by patient (both eyes on the same side)"
    else:
        csv_path = folder / "train.csv"
        paths, grades, ids, missing = read_label_csv(csv_path, "id_code", "diagnosis",
                                                     folder / "train_images", skip_bad)
        groups = {"patient": np.array(ids, dtype=object)}
        source = "APTOS 2019"
        group_note = "APTOS has no patient ids, so each image is its own group (eyes of one patient may straddle)"

    labels = np.asarray(grades, dtype=np.int64)
    items = np.array([str(p) for p in paths], dtype=object)
    full = Split(items=items, labels=labels, classes=GRADES, name="retinopathy/all", groups=groups,
                 root=str(folder))
    status = exposure_screen(full, skip_bad=True)
    if not skip_bad and (status == "bad").any():
        first = items[np.flatnonzero(status == "bad")[0]]
        load_image(first, mode="gray", max_side=256)  # the screen keeps no reason: say it
        raise BadImageError(first, "undecodable")
    full = Split(items=items, labels=labels, classes=GRADES, name="retinopathy/all",
                 groups={**groups, "exposure": status}, root=str(folder))
    note = _image_size_note(paths)
    n_patients = len(set(groups["patient"].tolist()))

    if official_test is None:
        tr, te = patient_split(labels, full.groups["patient"], seed=seed)
        train = full.subset(tr, name="retinopathy/train")
        test = full.subset(te, name="retinopathy/test")
        variant = (f"{source} labelled train set ({len(full)} images, {n_patients} patients), "
                   f"{group_note}, stratified by grade, seed {seed}: {len(train)} train / "
                   f"{len(test)} test{note}")
    else:
        train = full.subset(np.arange(len(full)), name="retinopathy/train")
        tp, tg, tgroups, tmissing = official_test
        tlabels = np.asarray(tg, dtype=np.int64)
        titems = np.array([str(p) for p in tp], dtype=object)
        probe = Split(items=titems, labels=tlabels, classes=GRADES, name="retinopathy/test",
                      groups=tgroups, root=str(folder))
        tgroups = {**tgroups, "exposure": exposure_screen(probe, skip_bad=True)}
        test = Split(items=titems, labels=tlabels, classes=GRADES, name="retinopathy/test",
                     groups=tgroups, root=str(folder))
        missing += tmissing
        variant = (f"{source} official train ({len(train)}) / test ({len(test)}) with the published "
                   f"solution labels{note}")

    if (folder / FIXTURE_MARKER).is_file():
        variant = f"{FIXTURE_LABEL}: {variant}"
    common = {"variant": variant, "layout": layout, "patient_groups": layout == "eyepacs",
              "val_group_key": "patient"}  # deep methods carve validation by patient too
    if missing:
        common["missing_images_skipped"] = missing
    out = []
    for s in (train, test):
        bad = int((np.asarray(s.groups["exposure"]) == "bad").sum())
        meta = {**common, "exposure": exposure_counts(s.groups["exposure"]),
                "exposure_rule": "under: >=90% grey in [0,30]; over: >=80% grey in [225,255]"}
        if bad:  # only reachable with skip_bad: such items decode as zero images downstream
            meta["bad_images"] = bad
        if skip_bad:
            meta["skip_bad"] = True  # tells deep decoding / fundus preparation to blank them
        out.append(Split(items=s.items, labels=s.labels, classes=GRADES, name=s.name,
                         groups=s.groups, root=s.root, meta=meta))
    return out[0], out[1]


def generate_fixture(folder: Path, n_patients: int = 40, size: int = 96, seed: int = 0) -> Path:
    """Write a synthetic EyePACS-layout set (trainLabels.csv + train/<patient>_<eye>.jpeg):
    off-centre discs on black whose count of bright and dark spots grows with the grade, so a
    method can learn something. A marker file makes every record say GENERATED FIXTURE."""
    import cv2
    from PIL import Image

    folder = Path(folder)
    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["image,level"]
    for p in range(n_patients):
        base = int(rng.choice(5, p=[0.5, 0.12, 0.24, 0.08, 0.06]))
        for eye in ("left", "right"):
            grade = int(np.clip(base + rng.integers(-1, 2) * (rng.random() < 0.3), 0, 4))
            img = np.zeros((size, int(size * 1.3), 3), np.uint8)
            c = (img.shape[1] // 2 + int(rng.integers(-8, 9)), size // 2)
            cv2.circle(img, c, int(size * 0.45), (150, 70, 30), -1)
            for _ in range(3 * grade):
                q = (c[0] + int(rng.integers(-30, 31) * size / 96), c[1] + int(rng.integers(-30, 31) * size / 96))
                color = (250, 230, 120) if rng.random() < 0.5 else (40, 10, 5)
                cv2.circle(img, q, max(1, size // 48), color, -1)
            name = f"{1000 + p}_{eye}"
            Image.fromarray(img).save(folder / "train" / f"{name}.jpeg", quality=92)
            rows.append(f"{name},{grade}")
    (folder / "trainLabels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / FIXTURE_MARKER).write_text(f"{FIXTURE_LABEL}; written by cvbench.tasks.retinopathy.reader.generate_fixture\n")
    return folder
