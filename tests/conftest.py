"""Shared fixtures: the real-data root (skips with a reason when absent) and isolated output dirs."""

from __future__ import annotations

import os
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
