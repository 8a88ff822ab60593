"""Shared fixtures: the real-data root (skips with a reason when absent) and isolated output dirs."""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

_DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _real_data_root() -> Path | None:
    env = os.environ.get("CVBENCH_DATA")
    for cand in ([Path(env)] if env else []) + [_DEFAULT_SHARED]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real data root ($CVBENCH_DATA or ../shared/data); skips the test when absent."""
    root = _real_data_root()
    if root is None:
        pytest.skip("real data not found: set CVBENCH_DATA to ../shared/data")
    return root


def task_data(real_data: Path, folder: str) -> Path:
    path = real_data / folder
    if not path.is_dir():
        pytest.skip(f"real data for {folder!r} not found under {real_data}")
    return path


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory, monkeypatch, request):
    """Tests are hermetic: each gets its own leaderboard folder and its own empty cache, never
    the committed leaderboard or an outside $CVBENCH_CACHE (so the suite passes twice in a row
    in one checkout). A test that deliberately shares one cache across the session (slow real-
    data features computed once) says so with @pytest.mark.shared_cache."""
    monkeypatch.setenv("CVBENCH_LEADERBOARD", str(tmp_path_factory.mktemp("leaderboard")))
    if request.node.get_closest_marker("shared_cache"):
        cache = tmp_path_factory.getbasetemp() / "shared-cache"
    else:
        cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CVBENCH_CACHE", str(cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522
_DAC_BYPASS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextmanager
def _modes_enforced():
    """Root ignores file modes; this drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    calling thread's effective capabilities for the block (they stay permitted, so they come
    back after it). Yields whether modes are now enforced."""
    if os.geteuid() != 0:
        yield True
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        yield False
        return
    saved = data[0].effective
    data[0].effective &= ~_DAC_BYPASS
    dropped = libc.capset(ctypes.byref(header), data) == 0
    try:
        yield dropped
    finally:
        if dropped:
            data[0].effective = saved
            libc.capset(ctypes.byref(header), data)


@pytest.fixture
def unreadable(tmp_path_factory):
    """`unreadable(path, mode=0)`: chmod `path` for the rest of the test, with file modes
    enforced even when the tests run as root (the bypassing capabilities are dropped from
    this thread, see `_modes_enforced`). Skips, saying why, where neither works; the code
    path is also tested with a PermissionError raised by monkeypatching (test_bad_inputs)."""
    made: list[Path] = []
    with _modes_enforced() as enforced:
        probe = tmp_path_factory.mktemp("probe")
        probe.chmod(0)
        try:
            os.listdir(probe)
            works = False
        except PermissionError:
            works = True
        probe.chmod(0o700)
        if not (enforced and works):
            pytest.skip("file modes are not enforced here (root whose capabilities cannot be dropped)")

        def make(path: Path, mode: int = 0) -> Path:
            path.chmod(mode)
            made.append(path)
            return path

        try:
            yield make
        finally:
            for path in made:
                path.chmod(0o755)
