"""FairFace reader (the official release layout) and a generated fixture.

Reads `fairface_label_train.csv` and `fairface_label_val.csv` (columns file, age, gender,
race, service_test) with images under `train/` and `val/`. FairFace publishes no test
labels, so the released validation set is the test split here. Race is the label; gender and
age are groups and the task's extra labels (task.toml). Training compositions are the task's
protocol (protocol.py).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.errors import DataError
from cvbench.split import Split
from cvbench.tasks import classes_of, config

# Class order fixed as in the source study (race is the main label); written once, in task.toml.
RACES: tuple[str, ...] = classes_of("fairface")
GENDERS: tuple[str, ...] = tuple(config("fairface")["extra_labels"]["gender"])
AGES: tuple[str, ...] = tuple(config("fairface")["extra_labels"]["age"])
LABEL_CSV = {"train": "fairface_label_train.csv", "test": "fairface_label_val.csv"}
REQUIRED_COLUMNS = ("file", "age", "gender", "race")
LAYOUT = config("fairface")["layout"]

def read_label_csv(
    folder: Path, csv_name: str, split_name: str, skip_bad: bool = False
) -> Split:
    """One FairFace label CSV as a Split (label = race; gender, age, race in `groups`).

    An unknown race/gender/age value or a missing image raises DataError naming file:line;
    with `skip_bad`, rows whose image file is missing are dropped and counted in meta.
    """
    folder = Path(folder)
    path = folder / csv_name
    if not path.is_file():
        raise DataError(f"missing label file {path}; expected layout: {LAYOUT}")
    listings: dict[Path, set[str]] = {}
    files, races, genders, ages, service = [], [], [], [], []
    missing: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        absent = [c for c in REQUIRED_COLUMNS if c not in header]
        if absent:
            raise DataError(
                f"{path}:1: missing column(s) {', '.join(absent)}; expected columns "
                "file, age, gender, race, service_test"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            rel = (row.get("file") or "").strip()
            if not rel or None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise DataError(f"{where}: malformed row (expected file, age, gender, race, service_test)")
            race, gender, age = row["race"].strip(), row["gender"].strip(), row["age"].strip()
            for value, valid, what in ((race, RACES, "race"), (gender, GENDERS, "gender"), (age, AGES, "age")):
                if value not in valid:
                    raise DataError(
                        f"{where}: unknown {what} {value!r}; expected one of {', '.join(valid)}"
                    )
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise DataError(f"{where}: file {rel!r} must be a path inside {folder}")
            image = folder / rel
            parent = image.parent
            if parent not in listings:
                listings[parent] = set(os.listdir(parent)) if parent.is_dir() else set()
            if image.name not in listings[parent]:
                if not skip_bad:
                    raise DataError(f"{where}: image file {image} does not exist")
                missing.append(str(image))
                continue
            files.append(str(image))
            races.append(race)
            genders.append(gender)
            ages.append(age)
            service.append((row.get("service_test") or "").strip().lower() == "true")
    if not files:
        raise DataError(f"{path}: no usable rows; expected layout: {LAYOUT}")
    race_id = np.array([RACES.index(r) for r in races], dtype=np.int64)
    gender_id = np.array([GENDERS.index(g) for g in genders], dtype=np.int64)
    age_id = np.array([AGES.index(a) for a in ages], dtype=np.int64)
    groups = {
        "race": np.array(races),
        "gender": np.array(genders),
        "age": np.array(ages),
        "race_gender": np.char.add(np.char.add(np.array(races), "/"), np.array(genders)),
        "race_id": race_id,
        "gender_id": gender_id,
        "age_id": age_id,
        "service_test": np.array(service, dtype=bool),
    }
    meta: dict[str, Any] = {"label_csv": csv_name}
    if missing:
        meta["missing_files"] = len(missing)
        meta["missing_examples"] = missing[:5]
    return Split(
        items=np.array(files, dtype=object),
        labels=race_id,
        classes=RACES,
        name=split_name,
        groups=groups,
        root=str(folder),
        meta=meta,
    )


def read(folder: Path, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
    """(train, test) from a FairFace release folder; test is the released validation set."""
    train = read_label_csv(folder, LABEL_CSV["train"], "fairface/train", skip_bad=skip_bad)
    test = read_label_csv(folder, LABEL_CSV["test"], "fairface/test", skip_bad=skip_bad)
    variant = (
        f"{len(train)} train ({_per_race(train)}) / {len(test)} test = the released validation "
        "set (FairFace publishes no test labels)"
    )
    if (Path(folder) / FIXTURE_MARKER).exists():
        variant = f"GENERATED FIXTURE (synthetic colour patches, not faces): {variant}"
    for s in (train, test):
        s.meta["variant"] = variant
    return train, test


def _per_race(split: Split) -> str:
    counts = split.class_counts()
    if len(set(counts.tolist())) == 1:
        return f"{counts[0]} per race"
    return ", ".join(f"{c} {n}" for c, n in zip(split.classes, counts))


# ---------------------------------------------------------------------------------------------
# Generated fixture (no FairFace download needed)

FIXTURE_MARKER = "GENERATED_FIXTURE.txt"


def generate_fixture(folder: Path, train_per_group: int = 4, val_per_group: int = 2,
                     size: int = 32, seed: int = 0) -> Path:
    """Write a tiny FairFace-layout folder of synthetic images (NOT faces) for smoke tests.

    Each race x gender group gets `train_per_group` / `val_per_group` images whose colour
    depends on the race, so a classifier can learn something. The marker file makes the
    reader label every record's data variant as a GENERATED FIXTURE.
    """
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    hues = np.linspace(0, 255, len(RACES), endpoint=False)
    number = 0
    for side, per_group in (("train", train_per_group), ("val", val_per_group)):
        (folder / side).mkdir(parents=True, exist_ok=True)
        lines = ["file,age,gender,race,service_test"]
        for r, race in enumerate(RACES):
            for gender in GENDERS:
                for _ in range(per_group):
                    number += 1
                    base = np.array([hues[r], 255 - hues[r], (2 * hues[r]) % 256])
                    img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(img).save(folder / side / f"{number}.jpg", quality=90)
                    age = AGES[int(rng.integers(len(AGES)))]
                    lines.append(f"{side}/{number}.jpg,{age},{gender},{race},True")
        (folder / LABEL_CSV["train" if side == "train" else "test"]).write_text("\n".join(lines) + "\n")
    (folder / FIXTURE_MARKER).write_text("synthetic colour patches written by cvbench, not FairFace faces\n")
    return folder
