"""pytest wiring of the speed guard (logic: tests/benchmarks/guard.py; the base revision's side:
tests/benchmarks/against.py); loaded by the root conftest.py, so `pytest --benchmark` works
from the project root.

    pytest --benchmark                               every non-slow benchmark, guarded
    pytest --benchmark --benchmark-all               also the slow end-to-end ones (make bench)
    pytest --benchmark --benchmark-against REF       against revision REF, measured here and now
    pytest --benchmark --benchmark-all --benchmark-update-baseline
                                                     refresh this machine's entry in
                                                     tests/benchmarks/baseline.json

Under --benchmark only tests/benchmarks is collected, pytest-benchmark is enabled (despite
addopts' --benchmark-disable) and times in CPU seconds, and each benchmark test runs pinned to
guard.THREADS threads. On a machine with an entry of its own in the baseline file, calibration
chunks run between its rounds and its figure (guard.Measurement) is compared with the entry's;
on one without (or with --benchmark-against), each round is followed by one round of the same
benchmark at the base revision, in a second pytest session (against.py), and the paired rounds
are compared. A ratio over its tolerance fails that test, by name. Ratio invariants and time
targets (the `speed_guard` fixture) assert only under --benchmark. Without --benchmark the only
change is that plain `pytest` leaves tests/benchmarks out unless the command line names it
(`pytest tests/benchmarks` runs them once each, unguarded).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.benchmarks import against as A
from tests.benchmarks import guard as G

BENCH_DIR = Path(__file__).resolve().parent
PRELOAD = ("torch", "cv2", "faiss", "sklearn.metrics")  # thread pools to load before pinning
_DEFAULT_TIMER = "time.perf_counter"  # pytest-benchmark's default --benchmark-timer


class GuardSession:
    """One guarded session, in one of four modes: "own" (against this machine's entry),
    "against" (against the base revision, measured beside), "update" (a refresh of this
    machine's entry), "worker" (the base revision's side of an "against" session)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.baseline_path = Path(config.getoption("cvbench_baseline"))
        self.file = G.BaselineFile.load(self.baseline_path)
        self.fingerprint = G.fingerprint(os.environ.get(G.FINGERPRINT_ENV))
        self.machine = G.machine_id(self.fingerprint)
        self.baseline = self.file.entry(self.machine)  # this machine's figures, every tolerance
        self.update = bool(config.getoption("cvbench_update"))
        self.against = config.getoption("cvbench_against")
        worker = config.getoption("cvbench_worker")
        self.channel = A.Channel(*map(int, worker.split(","))) if worker else None
        self.mode = ("update" if self.update else "worker" if worker else
                     "against" if self.against or not self.file.has_entry(self.machine) else "own")
        self.root = Path(config.rootpath)
        self.cache = self.root / A.CACHE  # under the git checkout's top, once there is one
        self.base: A.BaseSide | None = None
        self.base_commit = self.base_how = self.checkout_state = ""
        self._lock = None
        self.load_at_start = _load()
        self._workload: G.CalibrationWorkload | None = None
        self.measurements: list[G.Measurement] = []
        self.verdicts: list[G.Verdict] = []
        self.checks: list[G.Check] = []
        self.chunks: list[tuple[G.Calibration, G.Calibration]] = []
        self.failed_tests: set[str] = set()
        self.target_missed: set[str] = set()  # failed on a time target only
        self.to_confirm: dict[str, str] = {}  # failed the guard's own checks once: re-measure
        self.confirming: dict[str, str] = {}  # being re-measured: {name: what the 1st run saw}
        self.written: Path | None = None
        self.partial = False

    def calibrate(self) -> tuple[G.Calibration, G.Calibration]:
        if self._workload is None:
            self._workload = G.CalibrationWorkload()
        c = self._workload.chunk()
        self.chunks.append(c)
        return c

    def forget(self, name: str) -> None:
        """Drop a test's figures and checks (before it is measured again), in place."""
        self.measurements[:] = [m for m in self.measurements if m.name != name]
        self.verdicts[:] = [v for v in self.verdicts if v.name != name]
        self.checks[:] = [c for c in self.checks if c.test != name]
        self.failed_tests.discard(name)
        self.target_missed.discard(name)

    def recordable(self) -> list[G.Measurement]:
        """What a refresh writes: the figures of tests that passed or missed only a target."""
        return [m for m in self.measurements
                if m.name not in self.failed_tests or m.name in self.target_missed]

    def reference_unit_s(self, clock: str) -> float:
        ref = self.baseline.reference_unit_s(clock)
        if ref is None:  # no entry yet: this run is the reference
            ref = G.calibration_summary(self.chunks)[f"{clock}_unit_s"]
        return ref

    @property
    def base_label(self) -> str:
        return self.base_commit[:10]

    def start_base(self) -> None:
        """Resolve the base revision, check it out (or reuse the cached checkout), start the
        worker there; it collects while this session does."""
        top = A.repo_root(self.root)
        if top is None:
            raise A.AgainstError(
                f"this machine ({G.describe_machine(self.fingerprint)}) has no entry in "
                f"{self.baseline_path} and {self.root} is not a git checkout, so the base "
                f"revision cannot be measured beside it: refresh this machine's entry "
                f"(make bench-baseline) on an idle machine")
        self.base_commit, self.base_how = A.resolve_base(top, self.against, self.file.revision,
                                                         self.baseline_path)
        self.cache = top / A.CACHE
        self._lock = A.lock(self.cache)
        checkout, self.checkout_state = A.prepare_checkout(top, self.base_commit, self.cache)
        opt = self.config.option
        args = ["-p", "tests.benchmarks.plugin", "-p", "no:cacheprovider", "-q",
                f"--rootdir={checkout}", str(Path("tests", "benchmarks")),
                "--benchmark-all", f"--benchmark-timer={opt.benchmark_timer}",
                f"--benchmark-max-time={opt.benchmark_max_time}",
                f"--benchmark-min-time={opt.benchmark_min_time}",
                f"--benchmark-calibration-precision={opt.benchmark_calibration_precision}",
                f"--benchmark-warmup={'on' if opt.benchmark_warmup else 'off'}",
                f"--benchmark-warmup-iterations={opt.benchmark_warmup_iterations}",
                *(["--benchmark-disable-gc"] if opt.benchmark_disable_gc else [])]
        self.base = A.BaseSide(checkout, Path(A.__file__).resolve().parent, args,
                               self.cache / "worker.log", head_root=self.root)

    def close(self) -> None:
        if self.base is not None:
            self.base.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # the worker's side

    def worker_round(self, round_s: float, _elapsed: float) -> None:
        """After each round of the base revision's benchmark: report it, wait for the word."""
        self.channel.send({"round": round_s})
        if not self.channel.recv().get("go"):  # "finish" (or "quit": this run is over)
            raise A.StopRounds


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


_KEY = pytest.StashKey[GuardSession]()


def bench_name(item: pytest.Item) -> str:
    """Baseline key: the node id relative to tests/benchmarks."""
    path = Path(item.path).resolve()
    try:
        rel = path.relative_to(BENCH_DIR).as_posix()
    except ValueError:
        rel = path.name
    return rel + item.nodeid[item.nodeid.index("::"):] if "::" in item.nodeid else rel


# ---------------------------------------------------------------- options and set-up


def pytest_addoption(parser: pytest.Parser) -> None:
    import argparse

    g = parser.getgroup("cvbench speed guard")
    g.addoption("--benchmark", action="store_true", dest="cvbench_guard",
                help="run the benchmarks of tests/benchmarks (not the slow ones) and fail any "
                     "slower than this machine's entry in tests/benchmarks/baseline.json allows; "
                     "on a machine without one, than the baseline revision measured beside them")
    g.addoption("--benchmark-all", action="store_true", dest="cvbench_all",
                help="with --benchmark: the slow end-to-end benchmarks too (what `make bench` runs)")
    g.addoption("--benchmark-against", metavar="REF", default=None, dest="cvbench_against",
                help="with --benchmark: compare with git revision REF, measured on this machine "
                     "now, interleaved round by round (instead of this machine's entry, or of "
                     "the revision the baseline file records)")
    g.addoption("--benchmark-update-baseline", action="store_true", dest="cvbench_update",
                help="with --benchmark: write this run's figures into this machine's entry of "
                     "the baseline instead of failing on them (refused while the 1-minute load "
                     "average exceeds the cores, or with uncommitted changes; README 'Speed "
                     "regressions')")
    g.addoption("--benchmark-baseline", default=str(G.BASELINE_PATH), dest="cvbench_baseline",
                metavar="PATH", help="baseline file (default: tests/benchmarks/baseline.json)")
    g.addoption("--benchmark-worker", default=None, dest="cvbench_worker",
                help=argparse.SUPPRESS)  # against.py's worker: its two pipes


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("cvbench_update") or config.getoption("cvbench_all") \
            or config.getoption("cvbench_against") or config.getoption("cvbench_worker"):
        config.option.cvbench_guard = True
    if not config.getoption("cvbench_guard"):
        return
    # before pytest-benchmark (trylast) reads its options: enable it despite addopts, and time
    # in CPU seconds unless told otherwise (guard.py's docstring says why)
    if config.option.benchmark_timer == _DEFAULT_TIMER:
        config.option.benchmark_timer = "time.process_time"
    config.option.benchmark_enable = True
    config.option.benchmark_disable = False
    config.option.benchmark_skip = False
    gs = GuardSession(config)
    if gs.mode == "update":
        _refuse_refresh(gs)
    config.stash[_KEY] = gs


def _refuse_refresh(gs: GuardSession) -> None:
    """A refresh starts only on a machine no busier than its cores, and (in a git checkout) on
    committed code: it records the revision it measured, for machines without an entry."""
    refusal = G.refresh_refusal(G.load_average(), os.cpu_count() or 1)
    if refusal:
        raise pytest.UsageError(refusal)
    top = A.repo_root(gs.root)
    changed = A.changed_files(top, ignore=[gs.baseline_path]) if top else []
    if changed:
        raise pytest.UsageError(
            f"refusing to refresh the baseline: it records the revision it measured (HEAD), but "
            f"{len(changed)} tracked file(s) differ from it: {', '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}. Commit (or stash) them first.")


def pytest_sessionstart(session: pytest.Session) -> None:
    gs = session.config.stash.get(_KEY, None)
    if gs is None:
        return
    # Load the libraries with thread pools now, so threadpoolctl's limits reach them all.
    for mod in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(mod)
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None:  # one table: the guard's (pytest-benchmark's JSON/--benchmark-save still work)
        bs.display = lambda tr: None
    if gs.mode == "against":
        try:
            gs.start_base()
        except A.AgainstError as exc:
            gs.close()
            raise pytest.UsageError(str(exc)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Against the base revision: wait for its worker to have collected, and tell it the order
    this run will ask for its benchmarks in."""
    gs = session.config.stash.get(_KEY, None)
    if gs is None or gs.base is None:
        return
    plan = [bench_name(it) for it in session.items if "benchmark" in getattr(it, "fixturenames", ())]
    try:
        gs.base.start(plan)
    except A.AgainstError as exc:
        gs.close()
        raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    gs = config.stash.get(_KEY, None)
    if gs is not None:
        gs.close()


def names_benchmarks(args, invocation_dir) -> bool:
    """Whether command-line paths name tests/benchmarks or something in it."""
    for arg in args:
        path = Path(invocation_dir, str(arg).split("::", 1)[0]).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    """--benchmark: of the project's tests/, only tests/benchmarks. Without it, tests/benchmarks
    only when the command line names it (`make test`'s fast pass), so plain `pytest` is the
    unit run."""
    p = Path(collection_path).resolve()
    if config.stash.get(_KEY, None) is None:
        if p == BENCH_DIR and not names_benchmarks(
                config.args if config.args_source == pytest.Config.ArgsSource.ARGS else (),
                config.invocation_params.dir):
            return True
        return None
    if BENCH_DIR.parent in p.parents and p != BENCH_DIR and BENCH_DIR not in p.parents:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow benchmarks (end-to-end runs of minutes) run only with --benchmark-all (or an
    explicit -m); the unit tests' own `slow` ones are not touched."""
    if config.getoption("cvbench_all") or config.option.markexpr:
        return
    slow = [it for it in items if it.get_closest_marker("slow")
            and BENCH_DIR in Path(str(it.path)).resolve().parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [it for it in items if not it.get_closest_marker("slow")]


# ---------------------------------------------------------------- per test


_CHECKS = pytest.StashKey[G.SpeedChecks]()


@pytest.fixture
def speed_guard(request: pytest.FixtureRequest) -> G.SpeedChecks:
    """Round counts, interleaved timing, ratio invariants and time targets (guard.SpeedChecks);
    asserts only under --benchmark (never on the base revision's side: its checks are not this
    run's)."""
    gs = request.config.stash.get(_KEY, None)
    checks = G.SpeedChecks(bench_name(request.node), gs is not None,
                           gs.checks if gs is not None else None,
                           enforce=gs is None or gs.mode != "worker")
    request.node.stash[_CHECKS] = checks
    return checks


def _record_rounds(fixture, begin: Callable[[], object],
                   add: Callable[[float, float], object]) -> bool:
    """Hook into pytest-benchmark's per-round stats.update (private API): `begin()` before the
    first round, `add(seconds per iteration, seconds of the round)` after each. Without it the
    guard falls back to one calibration chunk before and one after the test, and compares with
    nothing at the base revision."""
    make_stats = getattr(fixture, "_make_stats", None)
    if make_stats is None:
        return False

    def hooked(iterations):
        stats = make_stats(iterations)
        update = stats.update

        def update_and_record(duration):
            update(duration)
            add(duration / iterations, duration)

        stats.update = update_and_record
        begin()
        return stats

    fixture._make_stats = hooked
    return True


def _clock(fixture) -> str:
    return "cpu" if getattr(fixture, "_timer", None) in G.CPU_TIMERS else "wall"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    gs = item.config.stash.get(_KEY, None)
    fixture = item.funcargs.get("benchmark") if gs is not None else None
    if fixture is None:
        if gs is None:
            return (yield)
        with G.pinned_threads(G.THREADS):
            return (yield)
    name = bench_name(item)
    if gs.mode == "worker":  # the base revision's side: rounds on command, no verdicts
        fixture._min_rounds = sys.maxsize  # benchmark(...) runs rounds until told to stop
        with G.pinned_threads(G.THREADS):
            _record_rounds(fixture, lambda: None, gs.worker_round)
            try:
                return (yield)
            except A.StopRounds:  # this side's rounds are all paired: the rest is not needed
                return None
    confirmable = _confirmable(item, gs, name)
    m: G.Measurement | None = None
    with G.pinned_threads(G.THREADS):
        if gs.mode == "against":
            pairing = A.Pairing(gs.base, name)
            hooked = _record_rounds(fixture, lambda: None, lambda r, _e: pairing.add(r))
        else:
            recorder = G.RoundRecorder(gs.calibrate)
            before = gs.calibrate()
            hooked = _record_rounds(fixture, recorder.begin, recorder.add)
        try:
            result = yield  # the test; its failure propagates as it is
        except G.InvariantFailed as exc:
            if confirmable:
                gs.to_confirm[name] = f"1st: {exc.check.name} = {exc.check.value:.3g}"
            raise
        finally:
            if gs.mode == "against":
                with contextlib.suppress(A.AgainstError):  # gs.base.dead says it; reported
                    pairing.finish()
        if gs.mode != "against":
            recorder.end()
            after = gs.calibrate()
    stats = getattr(getattr(fixture, "stats", None), "stats", None)
    if stats is None or not stats.data:
        return result
    clock = _clock(fixture)
    tolerance = gs.baseline.tolerance(name)
    if gs.mode == "against":
        v = G.compare_paired(name, pairing.now if hooked else list(stats.data), pairing.base,
                             tolerance, clock, gs.base_label, pairing.detail(gs.base))
    else:
        if hooked and recorder.rounds:
            m = recorder.measurement(name, clock)
        else:
            i = 0 if clock == "cpu" else 1
            m = G.Measurement.before_after(name, list(stats.data), before[i], after[i], clock)
        v = gs.baseline.compare(m)
        gs.measurements.append(m)
        fixture.extra_info.update(guard_figure=round(m.figure, 5), guard_clock=clock,
                                  calibration_unit_s=round(m.unit_s, 7),
                                  calibration_chunks=len(m.chunks))
    if name in gs.confirming:
        v.note = gs.confirming[name]
    gs.verdicts.append(v)
    if v.paired is not None:
        fixture.extra_info.update(guard_ratio_vs_base=round(v.paired, 4), guard_base=gs.base_commit,
                                  guard_base_median_s=v.baseline, guard_pairs=v.rounds)
    errors = []
    checks = item.stash.get(_CHECKS, None)
    for label, seconds in checks.targets if checks else ():
        if m is not None:
            c = G.Check(name, f"{label}: s (figure x this machine's unit at its refresh)",
                        m.figure * gs.reference_unit_s(clock), seconds, "at_most",
                        f"{m.median_s:.1f} s {clock} here now")
        else:  # no entry of this machine's own: its own seconds
            c = G.Check(name, f"{label}: s (median round here)", v.median_s, seconds, "at_most")
        gs.checks.append(c)
        if not c.passed:
            errors.append(f"time target missed: {c.message()}")
    if errors:  # a missed target fails the test, but its figure is sound: a refresh records it
        gs.target_missed.add(name)
    if v.failed and not gs.update:
        errors.insert(0, v.message())
        if confirmable:
            gs.to_confirm[name] = f"1st {v.ratio:.2f}x"
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
    return result


def _confirmable(item: pytest.Item, gs: GuardSession, name: str) -> bool:
    """A guard failure (figure over tolerance, ratio invariant) of a non-slow benchmark is
    re-measured once before it counts; not while refreshing, not a re-measurement itself."""
    return not gs.update and name not in gs.confirming and item.get_closest_marker("slow") is None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Under the guard, a benchmark that failed only the guard's own checks runs once more,
    with fresh fixtures, and that second measurement decides (guard.py: "Confirmation"); only
    its reports are logged, so it counts once."""
    gs = item.config.stash.get(_KEY, None)
    if gs is None or "benchmark" not in getattr(item, "fixturenames", ()):
        return None
    from _pytest.runner import runtestprotocol

    name = bench_name(item)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    first = gs.to_confirm.pop(name, None)
    if first is not None and any(r.failed for r in reports):
        bs = getattr(item.config, "_benchmarksession", None)
        if bs is not None:  # pytest-benchmark keeps the 2nd run's stats only
            bs.benchmarks[:] = [b for b in bs.benchmarks if getattr(b, "fullname", None)
                                != item.nodeid]
        gs.forget(name)
        gs.confirming[name] = first
        try:
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
        finally:
            del gs.confirming[name]
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    gs = item.config.stash.get(_KEY, None)
    if gs is not None and report.failed:
        gs.failed_tests.add(bench_name(item))
    return report


# ---------------------------------------------------------------- end of session


def _machine(gs: GuardSession) -> dict:
    """What a refresh's meta says of where and how loaded it ran (its fingerprint is beside)."""
    return {"node": platform.node(), "load_avg_at_start": gs.load_at_start,
            "load_avg_at_end": _load()}


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    gs = session.config.stash.get(_KEY, None)
    if gs is None:
        return
    if gs.base is not None and gs.base.dead and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # compared with nothing: not a pass
    if not gs.update or not gs.measurements:
        return
    keep = gs.recordable()
    top = A.repo_root(gs.root)
    revision = A.head_revision(top) if top else None
    meta = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "pytest " + " ".join(session.config.invocation_params.args),
        "revision": revision,
        "machine": _machine(gs),
        "threads": G.THREADS,
        "figure": "median over rounds of round / unit of the calibration chunks around it "
                  "(tests/benchmarks/guard.py)",
        "calibration": G.calibration_summary(gs.chunks),
    }
    gs.partial = gs.baseline.is_partial(m.name for m in keep)
    gs.file.with_entry(gs.machine, gs.fingerprint, gs.baseline.updated(keep, meta),
                       revision).save(gs.baseline_path)
    gs.written = gs.baseline_path


def _header(gs: GuardSession) -> list[str]:
    machine = f"this machine ({G.describe_machine(gs.fingerprint)}; entry {gs.machine})"
    tol = (f"tolerance +{gs.baseline.default_tolerance:.0%} unless {gs.baseline_path.name} "
           f"sets one")
    if gs.mode == "against":
        why = "--benchmark-against" if gs.against else "it has no entry of its own in " \
            f"{gs.baseline_path.name}"
        return [f"{machine}: measured against base revision {gs.base_label} ({gs.base_how}) "
                f"because {why}; its checkout {gs.base.checkout if gs.base else '-'} "
                f"({gs.checkout_state}), its benchmarks run in a second process, one round "
                f"after each round here",
                f"baseline / now: median round (s per iteration) at {gs.base_label} / here; "
                f"ratio: median over paired rounds of here / there; {tol}"]
    cal = G.calibration_summary(gs.chunks)
    ref = gs.baseline.reference_unit_s("cpu")
    meta = gs.baseline.meta
    whose = (f"its own entry, refreshed {meta.get('date', '?')} at "
             f"{str(meta.get('revision') or '?')[:10]} (load average "
             f"{(meta.get('machine') or {}).get('load_avg_at_end', '?')} at its end)"
             if meta else "no entry yet: this run writes it")
    ref_txt = f"its entry's {ref * 1e3:.2f} ms" if ref else "no entry's yet"
    return [f"{machine}: {whose}",
            f"figures: median over rounds of round / calibration unit (sqrt3(GEMM x stream x "
            f"JPEG decode) of the chunks around it; {G.THREADS} thread). CPU unit now "
            f"{cal.get('cpu_unit_s', 0) * 1e3:.2f} ms (median of {cal.get('chunks', 0)} "
            f"chunks), {ref_txt}; {tol}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    gs = config.stash.get(_KEY, None)
    if gs is None or gs.mode == "worker":
        return
    tr = terminalreporter
    tr.section("cvbench speed guard")
    if gs.base is not None and gs.base.dead:
        tr.write_line(gs.base.dead, red=True)
    if not gs.verdicts and not gs.checks:
        tr.write_line("no guarded benchmark ran")
        return
    for line in _header(gs):
        tr.write_line(line)
    if gs.base is not None and gs.base.errors:
        tr.write_line(f"not collected at {gs.base_label}: " + "; ".join(gs.base.errors))
    tr.write_line(G.format_table(gs.verdicts, gs.checks))
    failed = [v for v in gs.verdicts if v.failed]
    if gs.mode != "against":
        missing = sorted({k for k, v in gs.baseline.benchmarks.items() if "figure" in v}
                         - {v.name for v in gs.verdicts})
        if missing:
            tr.write_line(f"{len(missing)} entries of this machine's not run this session (e.g. "
                          f"slow ones without --benchmark-all)")
    if gs.update:
        if gs.written:
            kept = len(gs.recordable())
            partial = " (a partial refresh: the old meta kept, this run noted in its " \
                "partial_updates)" if gs.partial else ""
            tr.write_line(f"baseline written: {gs.written}, entry {gs.machine}: {kept} "
                          f"figures{partial}; {len(gs.failed_tests - gs.target_missed)} failed "
                          f"test(s) kept their old figure")
    elif failed:
        against = f"base revision {gs.base_label}" if gs.mode == "against" else "the baseline"
        tr.write_line(f"{len(failed)} benchmark(s) slower than {against} allows: "
                      + ", ".join(v.name for v in failed), red=True)


# ---------------------------------------------------------------- the base revision's worker


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session):
    """The worker's loop (against.py's protocol) instead of pytest's: it runs the benchmarks
    this session's driver names, when it names them. A file that failed to collect only loses
    its own benchmarks."""
    gs = session.config.stash.get(_KEY, None)
    if gs is None or gs.mode != "worker":
        return None
    from _pytest.runner import runtestprotocol

    items: dict[str, pytest.Item] = {}
    for it in session.items:
        items.setdefault(bench_name(it), it)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    errors = [f"{r.nodeid}: {_last_line(r.longrepr)}" for r in (tr.stats.get("error", [])
              if tr else []) if isinstance(r, pytest.CollectReport)]
    chan = gs.channel
    try:
        chan.send({"ready": sorted(items), "errors": errors})
        plan = [n for n in chan.recv().get("plan", []) if n in items]
        following = dict(zip(plan, plan[1:]))
        while True:
            msg = chan.recv()
            if "run" not in msg:
                break
            name = msg["run"]
            item, nextitem = items[name], items.get(following.get(name, ""))
            session._setupstate.teardown_exact(item)  # what a run before left that it doesn't need
            reports = runtestprotocol(item, nextitem=nextitem, log=True)
            bad = [r for r in reports if r.failed]
            outcome = "failed" if bad else "skipped" if any(r.skipped for r in reports) \
                else "passed"
            error = _last_line(bad[0].longrepr) if bad else ""
            chan.send({"done": name, "outcome": outcome, "error": error})
    except (EOFError, OSError):  # the driver is gone
        pass
    session._setupstate.teardown_exact(None)
    return True


def _last_line(longrepr) -> str:
    lines = str(longrepr).strip().splitlines()
    return lines[-1][:300] if lines else ""
