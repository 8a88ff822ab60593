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
    """The folder above the cvbench package: the source checkout when run from one."""
    return Path(__file__).resolve().parent.parent


def in_checkout() -> bool:
    """Whether cvbench runs from its source checkout (a git work tree with the committed
    leaderboard beside it) rather than from an installed copy."""
    root = repo_root()
    return (root / ".git").exists() and (root / "leaderboard").is_dir() and (root / "pyproject.toml").is_file()


def leaderboard_dir() -> Path:
    """Where records and pages go by default: $CVBENCH_LEADERBOARD, else the checkout's
    committed leaderboard/ when run from one, else ./leaderboard in the working folder."""
    env = os.environ.get("CVBENCH_LEADERBOARD")
    if env:
        return Path(env).expanduser()
    return repo_root() / "leaderboard" if in_checkout() else Path.cwd() / "leaderboard"


def scratch_leaderboard() -> Path:
    """Where an ad-hoc run (`cvbench run`, a suite file of your own) writes when nothing says
    where: in a checkout an ignored folder (.cache/runs/), never the committed leaderboard;
    an installed copy writes ./leaderboard as every run does."""
    env = os.environ.get("CVBENCH_LEADERBOARD")
    if env:
        return Path(env).expanduser()
    return repo_root() / ".cache" / "runs" if in_checkout() else Path.cwd() / "leaderboard"


def suites_dir() -> Path:
    """Where suite TOML files live: $CVBENCH_SUITES, else the committed suites (suites/ in the
    checkout, installed with the package as cvbench/suites)."""
    env = os.environ.get("CVBENCH_SUITES")
    if env:
        return Path(env).expanduser()
    installed = Path(__file__).resolve().parent / "suites"
    return installed if installed.is_dir() else repo_root() / "suites"


ENVIRONMENT = (
    ("CVBENCH_DATA", "the data root (default ~/.cache/cvbench/data; --data-dir overrides it)"),
    ("CVBENCH_CACHE", "the cache root: pixels, descriptors, embeddings, checkpoints (default ~/.cache/cvbench/cache)"),
    ("CVBENCH_LEADERBOARD", "where records and pages go (default: the committed leaderboard/ for a committed suite "
                            "run from the checkout, .cache/runs/ for ad-hoc runs there, ./leaderboard for an "
                            "installed copy; --leaderboard overrides it)"),
    ("CVBENCH_SUITES", "a folder of suite files to use instead of the committed ones"),
    ("CVBENCH_TASKS", "folders holding task folders of your own (os.pathsep-separated)"),
    ("CVBENCH_WEIGHTS", "folders or files of pretrained weights you provide (torchvision checkpoints)"),
    ("CVBENCH_PLUGINS", "modules to import that register methods of your own (comma-separated)"),
    ("CVBENCH_SCHEDULER", "a Dask scheduler tcp://host:port for the classical per-image work (--scheduler sets it)"),
    ("CVBENCH_PROGRESS", "0 silences every progress bar, 1 draws them where stderr is not a terminal "
                         "(default: bars on a terminal only; --no-progress silences them)"),
)
