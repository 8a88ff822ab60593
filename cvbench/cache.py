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
