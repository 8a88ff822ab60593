"""FairFace's protocol: training compositions (biased / balanced / natural / user mixes).

The `composition` condition re-draws the training split at one fixed total size with chosen
per-race proportions, so that a "biased" and a "balanced" training set differ only in their
mix, never in their size or epochs. Any method trains on it; the drawn counts go into the
record (data.train_used.composition). Without the condition a run trains on the whole split.

Presets: "biased" (the study's White-heavy mix), "rebalanced" (the study's rebalanced mix:
White 19.03%; the study gives the others only as 11-15%, so they share the rest equally,
13.5% each), "balanced" (equal shares, 1/7 each: ours, not the study's), "natural" (a simple
random sample of the pool), or a mix string "White=40,Black=10,...".
"""

from __future__ import annotations

import hashlib

import numpy as np

from cvbench.conditions import Condition
from cvbench.errors import UserError
from cvbench.split import Split

from .reader import RACES

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
# The study's rebalanced mix: White 19.03%, "the others 11-15%" (docs/studies.md): equal shares of the rest.
REBALANCED_MIX: dict[str, float] = {r: (19.03 if r == "White" else (100 - 19.03) / 6) for r in RACES}
PRESETS = ("natural", "biased", "balanced", "rebalanced")


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
    elif spec == "rebalanced":
        raw = dict(REBALANCED_MIX)
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




def _check(value) -> None:
    if not isinstance(value, str):
        raise UserError(f"composition must be a preset name or a 'Race=pct,...' string, got {value!r}")
    if value.strip() not in PRESETS:
        parse_mix(value)


def _apply(split: Split, value: str, seed: int) -> Split:
    return compose(split, value, None, seed)


CONDITIONS = (
    Condition("composition", "train", _apply, check=_check,
              what="training set drawn at one common size with a chosen race mix"),
)
