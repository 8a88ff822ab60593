"""The base revision measured beside the working tree: what `pytest --benchmark` does on a
machine without a baseline entry of its own (guard.py says when; README "Speed regressions").

    base revision  the one tests/benchmarks/baseline.json records (the code its latest refresh
                   measured), or --benchmark-against REF
    its checkout   a git worktree at .cache/bench-against/base (git-ignored), kept between runs
                   and moved with `git checkout` when the revision changes. pyproject.toml's
                   package-dir mapping (cvbench.baselines -> baselines/, ...) becomes symlinks in
                   it (cvbench/baselines -> ../baselines), so that with the checkout first on
                   PYTHONPATH `import cvbench...` is the base revision's code, in every process it
                   starts too. The interpreter and libraries are this environment's: nothing to
                   build, so a later run only checks the revision out (when it changed).
    its side       a second pytest session, the *worker*, in that checkout: it collects the base
                   revision's tests/benchmarks under this tree's harness (guard.py, against.py
                   and plugin.py stand in for its own: BOOT), and runs one named benchmark at a
                   time on command.
    interleaving   round by round: after each round of a benchmark here, the worker runs one
                   round of the same benchmark there while this process waits, so the two never
                   run at once. Round i here is paired with round i there (guard.compare_paired).

The protocol, JSON lines on two pipes (the worker's own output goes to a log file):

    worker -> here  {"ready": [names], "errors": [collection errors]}   once, after collecting
    here -> worker  {"plan": [names, in this run's order]}               once
    here -> worker  {"run": name}        after this tree's first round of `name`
    worker -> here  {"round": seconds}   after each of its rounds (seconds per iteration); it
                                         then waits for
    here -> worker  {"go": true}         one round more, or
                    {"finish": true}     no more: the rest of its test is skipped
    worker -> here  {"done": name, "outcome": "passed" | "failed" | "skipped", "error": text}
    here -> worker  {"quit": true}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

CACHE = Path(".cache") / "bench-against"  # under the project root

# The worker's entry point, run as `python -c BOOT HARNESS_DIR ARGS...` in the base checkout
# (so that `tests` is its tests): this tree's harness modules are registered under the names
# of the base revision's own before pytest starts, so its conftest's
# `pytest_plugins = ["tests.benchmarks.plugin"]` and its benchmarks' `from tests.benchmarks.guard
# import ...` get them. Its benchmarks and the package are the base revision's.
BOOT = """
import importlib.util, sys
from pathlib import Path
harness, args = sys.argv[1], sys.argv[2:]
import tests.benchmarks as package
for name in ("guard", "against", "plugin"):
    spec = importlib.util.spec_from_file_location(f"tests.benchmarks.{name}", f"{harness}/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    setattr(package, name, module)
sys.modules["tests.benchmarks.plugin"].BENCH_DIR = Path("tests", "benchmarks").resolve()
import pytest
sys.exit(pytest.main(args))
"""


class AgainstError(RuntimeError):
    """The base revision cannot be measured; the message says why and what to do."""


class StopRounds(Exception):
    """Raised in the worker from a round when this side needs no more of them."""


# ---------------------------------------------------------------- git


def git(root: Path, *args: str, check: bool = True) -> str:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    except OSError as exc:  # no git at all
        raise AgainstError(f"git is needed to measure the base revision: {exc}") from None
    if check and r.returncode != 0:
        raise AgainstError(f"`git {' '.join(args)}` failed in {root}: {r.stderr.strip()}")
    return r.stdout.rstrip()  # not strip(): `status --porcelain` lines can start with a space


def repo_root(path: Path) -> Path | None:
    """The top of the git checkout holding `path`; None outside one (or without git)."""
    with contextlib.suppress(AgainstError):
        top = git(path, "rev-parse", "--show-toplevel", check=False)
        return Path(top) if top else None
    return None


def head_revision(root: Path) -> str | None:
    with contextlib.suppress(AgainstError):
        return git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False) or None
    return None


def changed_files(root: Path, ignore: Iterable[Path] = ()) -> list[str]:
    """Tracked files that differ from HEAD (staged or not), less `ignore`."""
    skip = {Path(p).resolve() for p in ignore}
    out = git(root, "status", "--porcelain", "--untracked-files=no")
    paths = [line[3:].split(" -> ")[-1] for line in out.splitlines() if line.strip()]
    return [p for p in paths if (root / p).resolve() not in skip]


def resolve_base(root: Path, against: str | None, recorded: str | None,
                 baseline_path: Path) -> tuple[str, str]:
    """(commit, how it was chosen): --benchmark-against REF, else the revision the baseline
    file records, else the last commit that changed the file (one from before revisions were
    recorded)."""
    def commit(ref: str, where: str) -> str:
        sha = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if not sha:
            raise AgainstError(f"{where}: {ref!r} is not a commit of this clone (fetch it, or "
                               f"name another with --benchmark-against REF)")
        return sha

    if against:
        return commit(against, "--benchmark-against"), f"--benchmark-against {against}"
    if recorded:
        return commit(recorded, f"the revision {Path(baseline_path).name} records"), \
            f"the revision {Path(baseline_path).name} records"
    last = git(root, "log", "-1", "--format=%H", "--", str(baseline_path), check=False)
    if last:
        return last, f"the last commit of {Path(baseline_path).name} (it records no revision)"
    raise AgainstError(f"no revision to measure: {baseline_path} records none and is not "
                       f"committed; pass --benchmark-against REF")


# ---------------------------------------------------------------- the checkout


def package_links(pyproject_text: str) -> dict[str, str]:
    """{path a package's name puts it at: its package-dir}, relative to the project root, for
    the packages setuptools maps elsewhere (pyproject.toml [tool.setuptools] package-dir),
    parents first; "" maps the root package folder (a src layout) and is left to PYTHONPATH
    (python_path)."""
    import tomllib

    mapping = tomllib.loads(pyproject_text).get("tool", {}).get("setuptools", {}).get(
        "package-dir", {})
    links = {name.replace(".", "/"): str(Path(d)) for name, d in mapping.items()
             if name and Path(d) != Path(name.replace(".", "/"))}
    return dict(sorted(links.items(), key=lambda kv: kv[0].count("/")))


def python_path(checkout: Path) -> list[Path]:
    """Where the checkout's packages import from (its root, or its package-dir "" folder)."""
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        mapping = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get(
            "setuptools", {}).get("package-dir", {})
        if mapping.get(""):
            return [checkout / mapping[""], checkout]
    return [checkout]


def link_packages(checkout: Path) -> list[Path]:
    """Make the symlinks of package_links in the checkout (replacing stale ones)."""
    pyproject = checkout / "pyproject.toml"
    if not pyproject.is_file():
        return []
    made = []
    for at, target in package_links(pyproject.read_text(encoding="utf-8")).items():
        link = checkout / at
        rel = os.path.relpath(checkout / target, link.parent)
        if link.is_symlink() and os.readlink(link) == rel:
            made.append(link)
            continue
        if link.is_symlink():
            link.unlink()
        elif link.exists():  # a real folder there: the mapping is moot
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(rel, target_is_directory=True)
        made.append(link)
    return made


def _unlink_packages(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file():
        for at in reversed(package_links(pyproject.read_text(encoding="utf-8"))):
            if (checkout / at).is_symlink():
                (checkout / at).unlink()


def prepare_checkout(root: Path, commit: str, cache: Path) -> tuple[Path, str]:
    """The base revision checked out in a git worktree at `cache`/base, made or moved as
    needed, with its package links: (its path, what was done: "cached", "moved", "created")."""
    path = cache / "base"
    cache.mkdir(parents=True, exist_ok=True)
    if (path / ".git").is_file() and repo_root(path) == path.resolve():
        if git(path, "rev-parse", "HEAD") == commit:
            link_packages(path)
            return path, "cached"
        _unlink_packages(path)  # untracked links could be in the way of tracked files
        git(path, "checkout", "--quiet", "--force", "--detach", commit)
        link_packages(path)
        return path, "moved"
    if path.exists() or path.is_symlink():
        shutil.rmtree(path)
    git(root, "worktree", "prune")
    git(root, "worktree", "add", "--quiet", "--force", "--detach", str(path), commit)
    link_packages(path)
    return path, "created"


def lock(cache: Path) -> TextIO:
    """Hold `cache`/lock for this session (until the returned file is closed), so that two runs
    in one checkout never move its base checkout under each other."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    f = open(cache / "lock", "w", encoding="utf-8")  # held open: the lock lasts
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise AgainstError(f"another `pytest --benchmark` in this checkout is measuring its base "
                           f"revision (it holds {cache / 'lock'}); wait for it to end") from None
    return f


# ---------------------------------------------------------------- the protocol


class Channel:
    """JSON lines over a pair of pipe file descriptors."""

    def __init__(self, read_fd: int, write_fd: int):
        self._r: TextIO = os.fdopen(read_fd, "r", encoding="utf-8")
        self._w: TextIO = os.fdopen(write_fd, "w", encoding="utf-8")

    def send(self, message: Mapping[str, Any]) -> None:
        self._w.write(json.dumps(dict(message)) + "\n")
        self._w.flush()

    def recv(self) -> dict[str, Any]:
        line = self._r.readline()
        if not line:
            raise EOFError("the other side closed the pipe")
        return json.loads(line)

    def close_writer(self) -> None:
        with contextlib.suppress(OSError):
            self._w.close()

    def close(self) -> None:
        self.close_writer()
        with contextlib.suppress(OSError):
            self._r.close()


class BaseSide:
    """This process' end of the worker: starts it in the checkout, and talks to it."""

    def __init__(self, checkout: Path, harness: Path, pytest_args: list[str], log: Path,
                 head_root: Path, env: Mapping[str, str] | None = None):
        self.checkout, self.log = Path(checkout), Path(log)
        self.names: set[str] = set()
        self.errors: list[str] = []
        self.dead: str = ""  # why it stopped, when it did
        worker_reads, here_writes = os.pipe()
        here_reads, worker_writes = os.pipe()
        env = dict(os.environ if env is None else env)
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)  # never this tree's
                if p and Path(p).resolve() != Path(head_root).resolve()]
        env["PYTHONPATH"] = os.pathsep.join([*map(str, python_path(self.checkout)), *rest])
        self._basetemp = tempfile.mkdtemp(prefix="cvbench-base-")
        args = [*pytest_args, f"--benchmark-worker={worker_reads},{worker_writes}",
                f"--basetemp={self._basetemp}",
                "-W", "ignore::pytest.PytestAssertRewriteWarning"]  # the harness, imported by BOOT
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", BOOT, str(harness), *args],
                                         cwd=self.checkout, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         pass_fds=(worker_reads, worker_writes))
        os.close(worker_reads)
        os.close(worker_writes)
        self.channel = Channel(here_reads, here_writes)

    def _fail(self, exc: BaseException) -> AgainstError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:] \
            if self.log.is_file() else ""
        self.dead = f"the base revision's side stopped ({exc}; exit {self.proc.returncode}); " \
                    f"its log: {self.log}"
        return AgainstError(f"{self.dead}\n{tail}")

    def send(self, message: Mapping[str, Any]) -> None:
        if self.dead:
            raise AgainstError(self.dead)
        try:
            self.channel.send(message)
        except OSError as exc:
            raise self._fail(exc) from None

    def recv(self) -> dict[str, Any]:
        if self.dead:
            raise AgainstError(self.dead)
        try:
            return self.channel.recv()
        except (EOFError, OSError, ValueError) as exc:
            raise self._fail(exc) from None

    def start(self, plan: list[str]) -> None:
        """Wait until the worker has collected, then tell it this run's order."""
        ready = self.recv()
        self.names, self.errors = set(ready.get("ready", ())), list(ready.get("errors", ()))
        self.send({"plan": list(plan)})

    def close(self) -> None:
        """Tell the worker to quit, and close this end: a worker waiting anywhere stops."""
        if self.proc.poll() is None and not self.dead:
            with contextlib.suppress(AgainstError):
                self.send({"quit": True})
        self.channel.close_writer()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.channel.close()
        shutil.rmtree(self._basetemp, ignore_errors=True)


class Pairing:
    """One run of one benchmark here, with the base revision's rounds next to its own: `add`
    after each round here runs one there; `finish` once this side is done."""

    def __init__(self, side: BaseSide | None, name: str):
        self.name = name
        self.side = side if side is not None and not side.dead and name in side.names else None
        self.now: list[float] = []
        self.base: list[float] = []
        self.waiting = False  # the worker waits after one of its rounds
        self.done: dict[str, Any] | None = None

    def add(self, round_s: float) -> None:
        self.now.append(round_s)
        if self.side is None or self.done is not None:
            return
        self.side.send({"go": True} if self.waiting else {"run": self.name})
        self._receive()

    def _receive(self) -> None:
        msg = self.side.recv()
        if "round" in msg:
            self.base.append(float(msg["round"]))
            self.waiting = True
        else:
            self.done, self.waiting = msg, False

    def finish(self) -> None:
        if self.side is not None and self.waiting:
            self.side.send({"finish": True})
            self.waiting = False
            while self.done is None:
                self._receive()

    def detail(self, side: BaseSide | None) -> str:
        """Why there is nothing to compare with, when there is not."""
        if self.base:
            return ""
        if side is None:
            return ""
        if side.dead:
            return "base side stopped"
        if self.name not in side.names:
            return "not at base"
        if self.done and self.done.get("outcome") != "passed":
            return f"{self.done.get('outcome')} at base"
        return "no rounds at base"
