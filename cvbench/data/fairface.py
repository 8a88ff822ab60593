"""FairFace reader and training-set compositions (biased / balanced / natural / user mixes).

Reads the official release layout: `fairface_label_train.csv` and `fairface_label_val.csv`
(columns file, age, gender, race, service_test) with images under `train/` and `val/`.
FairFace publishes no test labels, so the released validation set is the test split here.

Compositions re-draw a training set of a fixed total size with chosen per-race proportions,
so that a "biased" and a "balanced" set differ only in their mix, never in their size.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UserError
from ..split import Split

# Class order fixed as in the source study (race is the main label).
RACES: tuple[str, ...] = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
GENDERS: tuple[str, ...] = ("Male", "Female")
AGES: tuple[str, ...] = (
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "more than 70",
)
LABEL_CSV = {"train": "fairface_label_train.csv", "test": "fairface_label_val.csv"}
REQUIRED_COLUMNS = ("file", "age", "gender", "race")
LAYOUT = (
    "fairface_label_train.csv + fairface_label_val.csv (columns file, age, gender, race, "
    "service_test) with images train/N.jpg and val/N.jpg (FairFace release)"
)

# The source study's biased training mix (percent of the training set per race).
BIASED_MIX: dict[str, float] = {
    "White": 43.93,
    "Latino_Hispanic": 10.26,
    "Black": 9.84,
    "East Asian": 9.80,
    "Indian": 9.59,
    "Southeast Asian": 8.93,
    "Middle Eastern": 7.65,
}
PRESETS = ("natural", "biased", "balanced")


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
    # class lists for string groups: the runner scores aux heads (gender, age) through them
    meta: dict[str, Any] = {
        "label_csv": csv_name,
        "gender_classes": list(GENDERS),
        "age_classes": list(AGES),
        "race_classes": list(RACES),
    }
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


def read_fairface(folder: Path, seed: int = 0, skip_bad: bool = False) -> tuple[Split, Split]:
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
# Compositions


def parse_mix(spec: str, groups: tuple[str, ...] = RACES) -> dict[str, float]:
    """'White=40,Black=10,...' -> {group: fraction} (fractions sum to 1; omitted groups get 0).

    Presets: 'biased' (the study's mix) and 'balanced' (equal shares). Percentages need not
    sum to 100: they are normalised, so 'White=2,Black=1' means two thirds White.
    """
    spec = spec.strip()
    if spec == "biased":
        raw = dict(BIASED_MIX)
    elif spec == "balanced":
        raw = {g: 1.0 for g in groups}
    else:
        raw = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in groups:
                raise UserError(
                    f"bad composition entry {part!r} in {spec!r}; expected 'group=percent' with "
                    f"group one of {', '.join(groups)} (or a preset: {', '.join(PRESETS)})"
                )
            try:
                raw[name] = float(value)
            except ValueError:
                raise UserError(f"bad percentage {value!r} for {name!r} in composition {spec!r}") from None
            if raw[name] < 0:
                raise UserError(f"negative percentage for {name!r} in composition {spec!r}")
    total = sum(raw.values())
    if total <= 0:
        raise UserError(f"composition {spec!r} has no positive share")
    return {g: raw.get(g, 0.0) / total for g in groups}


def largest_remainder(fractions: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `fractions` (Hamilton's method).

    Each group first gets floor(fraction * total); the seats left over go one each to the
    groups with the largest remainders (ties: the earlier group in class order).
    """
    quotas = np.asarray(fractions, dtype=np.float64) * total
    counts = np.floor(quotas + 1e-9).astype(np.int64)
    left = int(total - counts.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(quotas)), -(quotas - counts)))
        counts[order[:left]] += 1
    return counts


def mix_fractions(spec: str, split: Split, group_key: str = "race") -> dict[str, float]:
    """Fractions per group for a composition name or mix string ('natural' = as available)."""
    names = _group_names(split, group_key)
    if spec.strip() == "natural":
        values = np.asarray(split.groups[group_key])
        counts = np.array([(values == g).sum() for g in names], dtype=np.float64)
        return {g: c / counts.sum() for g, c in zip(names, counts)}
    return parse_mix(spec, names)


def _group_names(split: Split, group_key: str) -> tuple[str, ...]:
    if group_key == "race" and tuple(split.classes) == RACES:
        return RACES
    if group_key not in split.groups:
        raise UserError(f"split {split.name} has no group {group_key!r}; groups: {', '.join(split.groups)}")
    return tuple(sorted({str(v) for v in split.groups[group_key]}))


def fitting_total(split: Split, specs: tuple[str, ...] = PRESETS, group_key: str = "race") -> int:
    """The largest total N at which every composition in `specs` fits the available items.

    With 1000 images per race, the biased mix (43.93% White) caps N at floor(1000 / 0.4393)
    = 2276; using that same N for every composition keeps the comparison at equal size.
    """
    names = _group_names(split, group_key)
    values = np.asarray(split.groups[group_key]).astype(str)
    avail = np.array([(values == g).sum() for g in names], dtype=np.int64)
    best = int(avail.sum())
    for spec in specs:
        frac = np.array([mix_fractions(spec, split, group_key)[g] for g in names])
        pos = frac > 0
        n = int(min(best, np.floor((avail[pos] / frac[pos]).min() + 1e-9)))
        while n > 0 and (largest_remainder(frac, n) > avail).any():  # rounding may overshoot
            n -= 1
        best = min(best, n)
    return best


def compose(
    split: Split,
    composition: str,
    total: int | None = None,
    seed: int = 0,
    group_key: str = "race",
) -> Split:
    """Draw a training set of `total` items whose `group_key` mix follows `composition`.

    composition: "natural" (a simple random sample of the pool: counts follow the pool's mix
    in expectation), "biased" (the study's mix), "balanced" (equal per group), or a mix
    string "White=40,Black=10,...". `total` None =
    `fitting_total` over the presets (the same N for every composition; a user mix that
    does not fit at that N raises and names the largest N that would).
    Mix counts are rounded by largest remainder. Items of each group are taken as a prefix of one
    seeded permutation of that group that does not depend on the mix, so compositions drawn
    with the same seed share as many items as possible (a paired design).
    """
    names = _group_names(split, group_key)
    fractions = mix_fractions(composition, split, group_key)
    if total is None:
        total = fitting_total(split, PRESETS, group_key)
    total = int(total)
    if total <= 0:
        raise UserError(f"composition total must be positive, got {total}")
    frac = np.array([fractions[g] for g in names])
    values = np.asarray(split.groups[group_key]).astype(str)
    if composition.strip() == "natural":
        if total > len(split):
            raise UserError(f"composition 'natural' at total {total} exceeds the {len(split)} items of {split.name}")
        rng = np.random.default_rng([seed, _stable_hash("natural")])
        keep = np.sort(rng.permutation(len(split))[:total])
        counts = np.array([(values[keep] == g).sum() for g in names], dtype=np.int64)
    else:
        counts = largest_remainder(frac, total)
        chosen = []
        for g, n in zip(names, counts):
            idx = np.flatnonzero(values == g)
            if n > len(idx):
                raise UserError(
                    f"composition {composition!r} at total {total} needs {n} items of {group_key} "
                    f"{g!r} but {split.name} has {len(idx)}; lower the total (at most "
                    f"{fitting_total(split, (composition,), group_key)} fits)"
                )
            rng = np.random.default_rng([seed, _stable_hash(g)])
            chosen.append(idx[rng.permutation(len(idx))[:n]])
        keep = np.sort(np.concatenate(chosen))
    info = {
        "name": composition,
        "group_key": group_key,
        "total": total,
        "counts": {g: int(n) for g, n in zip(names, counts)},
        "percent": {g: round(100 * float(n) / total, 2) for g, n in zip(names, counts)},
        "requested_percent": {g: round(100 * float(f), 2) for g, f in zip(names, frac)},
        "seed": seed,
        "rounding": "simple random sample" if composition.strip() == "natural" else "largest remainder",
    }
    return split.subset(keep, name=f"{split.name}[{composition}]", composition=info)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# ---------------------------------------------------------------------------------------------
# Any method, trained on a composition


COMPOSITION_PARAMS = ("composition", "composition_total", "composition_key")


def with_composition(base: type, defaults: dict[str, Any] | None = None) -> type:
    """A subclass of method class `base` that trains on `compose(train, composition, ...)`.

    The subclass takes every parameter of `base` (with `defaults` overriding its defaults)
    plus composition="natural", composition_total=0 (0 = the largest size every preset fits,
    so biased and balanced runs have the same N) and composition_key="race". It also
    declares `seed` when `base` does not, so the runner's seed picks the drawn items. Test
    scoring is untouched; the drawn composition goes into info_["composition"].
    """
    import inspect

    from cvbench.methods import method_variant

    base_names = set(inspect.signature(base.__init__).parameters)
    extra = {"composition": "natural", "composition_total": 0, "composition_key": "race"}
    if "seed" not in base_names:
        extra["seed"] = 0

    def fit(self, split: Split):
        total = int(self.composition_total or 0) or None
        train = compose(split, self.composition, total, int(self.seed or 0), self.composition_key)
        base.fit(self, train)
        info = dict(getattr(self, "info_", None) or {})
        info["composition"] = train.meta["composition"]
        info["composition_fingerprint"] = train.fingerprint
        self.info_ = info
        return self

    doc = (
        f"{(base.__doc__ or base.__name__).strip().splitlines()[0]} Trained on a composition "
        "(natural / biased / balanced / 'Race=pct,...') of the training split at equal size."
    )
    return method_variant(base, name=f"Composed{base.__name__}", doc=doc, defaults=defaults,
                          extra=extra, namespace={"fit": fit})


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
