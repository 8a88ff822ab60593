"""What every cache does with a file that fails its check on load: say so in one line,
delete it, and let the caller recompute. A cache is never trusted when it does not load, and
never fatal."""

from __future__ import annotations

import pickle
import shutil
import sys
import zipfile
from pathlib import Path

#: What a truncated, overwritten or foreign cache file raises when numpy / torch read it.
CORRUPT = (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile,
           pickle.UnpicklingError)


class CacheCorrupt(ValueError):
    """A cache entry is there but does not pass its check (size, shape, contents)."""


def discard(path: str | Path, reason: BaseException | str) -> None:
    """One-line warning, then remove the file or folder so that it is recomputed."""
    path = Path(path)
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    print(f"cvbench: cache {path} is corrupt ({text[:160]}); recomputing it", file=sys.stderr)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- which stages a cache served
_USAGE: dict[str, list[int]] = {}
_MADE: set[tuple[str, str]] = set()  # (stage, key) computed inside the current usage block


def note(stage: str, hit: bool, n: int = 1, key: str | None = None) -> None:
    """Count a cache lookup of `stage` ("descriptors", "embeddings", ...): `n` items found
    (hit) or computed (miss). The runner reads the counts into each record (`usage`), so a
    record says which of its stages a cache served and a page can tell cold runs from warm.

    With `key` (the entry's path or hash), reading back an entry this block computed itself
    (a fit that writes the descriptor store in one pass and reads it in the next) is not a
    hit: the run paid for it."""
    if key is not None:
        if hit and (stage, key) in _MADE:
            return
        if not hit:
            _MADE.add((stage, key))
    counts = _USAGE.setdefault(stage, [0, 0])
    counts[0 if hit else 1] += int(n)


class usage:
    """`with usage() as u: ...` -> u.counts {stage: {"hits": h, "misses": m}} of the lookups
    made inside the block (nested blocks each see their own)."""

    def __enter__(self) -> usage:
        self._before = {k: list(v) for k, v in _USAGE.items()}
        self._made_before = set(_MADE)
        _MADE.clear()
        self.counts: dict[str, dict[str, int]] = {}
        return self

    def __exit__(self, *exc) -> None:
        _MADE.clear()
        _MADE.update(self._made_before)
        for stage, (h, m) in _USAGE.items():
            h0, m0 = self._before.get(stage, [0, 0])
            if h - h0 or m - m0:
                self.counts[stage] = {"hits": h - h0, "misses": m - m0}
