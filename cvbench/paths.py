"""Where data and caches live: --data-dir, else $CVBENCH_DATA, else ~/.cache/cvbench/data."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the explicit argument, else $CVBENCH_DATA, else ~/.cache/cvbench/data."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("CVBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cvbench" / "data"


def cache_root() -> Path:
    """The cache root ($CVBENCH_CACHE, else ~/.cache/cvbench/cache); created on demand."""
    env = os.environ.get("CVBENCH_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "cvbench" / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(name: str) -> Path:
    """A named sub-folder of the cache root (e.g. 'sift', 'vocab', 'checkpoints')."""
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The source checkout (where suites/ and leaderboard/ live)."""
    return Path(__file__).resolve().parent.parent


def leaderboard_dir() -> Path:
    """Where records and pages go: $CVBENCH_LEADERBOARD, else <repo>/leaderboard."""
    env = os.environ.get("CVBENCH_LEADERBOARD")
    return Path(env).expanduser() if env else repo_root() / "leaderboard"


def suites_dir() -> Path:
    """Where suite TOML files live: $CVBENCH_SUITES, else <repo>/suites."""
    env = os.environ.get("CVBENCH_SUITES")
    return Path(env).expanduser() if env else repo_root() / "suites"
