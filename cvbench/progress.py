"""Progress bars for the long stages of a run, with one switch for the whole process.

Every stage that can take more than a couple of seconds (decoding, descriptor extraction, the
vocabulary, encoding, kernels, embeddings, training) opens its bar here:

    from cvbench import progress
    with progress.bar(len(items), "descriptors", unit="img") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

A bar is drawn on a terminal (stderr) and is silent otherwise: in CI, in a pipe, in a log file.
`--no-progress` (RunOptions.progress=False) turns every bar off with `set_enabled(False)`;
`CVBENCH_PROGRESS=0` does the same from the environment and `CVBENCH_PROGRESS=1` forces bars on
(a terminal the tool cannot see, e.g. under `script`). Bars go to stderr and leave nothing behind
(`leave=False`), so a run's console lines and records are the same with or without them.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_switch: bool | None = None  # None: decided by the environment and the terminal


def set_enabled(flag: bool | None) -> None:
    """False turns every bar off, True forces them on, None returns to the default."""
    global _switch
    _switch = flag


@contextmanager
def enabled_as(flag: bool | None) -> Iterator[None]:
    """The switch set to `flag` inside the block and restored after it."""
    global _switch
    before = _switch
    _switch = flag
    try:
        yield
    finally:
        _switch = before


def enabled() -> bool:
    """Whether a bar opened now would be drawn."""
    if _switch is not None:
        return _switch and _on_terminal_or_forced()
    return _on_terminal_or_forced()


def _silenced() -> bool:
    env = os.environ.get("CVBENCH_PROGRESS", "").strip().lower()
    return _switch is False or env in {"0", "false", "no", "off"}


def _on_terminal_or_forced() -> bool:
    env = os.environ.get("CVBENCH_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if env in {"1", "true", "yes", "on"}:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def bar(total: int | None, desc: str, unit: str = "img", show: bool = True, force: bool = False,
        **kwargs):
    """A tqdm bar for one stage; `show=False` (a caller's own switch) keeps it silent and
    `force=True` (a caller asked for bars explicitly) draws it off a terminal too, unless
    --no-progress or CVBENCH_PROGRESS=0 said otherwise. Use it as a context manager and call
    `.update(n)`."""
    from tqdm.auto import tqdm

    drawn = bool(show) and (enabled() or (force and not _silenced()))
    opts = dict(leave=False, dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
    opts.update(kwargs)
    return tqdm(total=total, desc=desc, unit=unit, disable=not drawn, **opts)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img",
          show: bool = True) -> Iterator[T]:
    """`items` with a bar that advances by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(total, desc, unit=unit, show=show) as b:
        for item in items:
            yield item
            b.update(1)


@contextmanager
def stage(desc: str, show: bool = True) -> Iterator[None]:
    """A one-line marker for a stage that cannot count its steps (a k-means or EM fit inside
    a library): its name while it runs, cleared when it ends."""
    with bar(None, desc, unit="", show=show, bar_format="{desc} ...") as b:
        b.refresh()
        yield
