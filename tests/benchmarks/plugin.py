"""pytest wiring of the speed guard (logic: tests/benchmarks/guard.py); loaded by the root
conftest.py, so `pytest --benchmark` works from the project root.

    pytest --benchmark                               every non-slow benchmark, guarded
    pytest --benchmark --benchmark-all               also the slow end-to-end ones (make bench)
    pytest --benchmark --benchmark-all --benchmark-update-baseline
                                                     refresh tests/benchmarks/baseline.json

Under --benchmark only tests/benchmarks is collected, pytest-benchmark is enabled (despite
addopts' --benchmark-disable) and times in CPU seconds, and each benchmark test runs pinned to
guard.THREADS threads with calibration chunks between its rounds. After the test its figure
(guard.Measurement) is compared with the baseline; a figure over its tolerance fails that
test, by name. Ratio
invariants and time targets (the `speed_guard` fixture) assert only under --benchmark.
Without --benchmark the only change is that plain `pytest` leaves tests/benchmarks out unless
the command line names it (`pytest tests/benchmarks` runs them once each, unguarded).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
from pathlib import Path

import pytest

from tests.benchmarks import guard as G

BENCH_DIR = Path(__file__).resolve().parent
PRELOAD = ("torch", "cv2", "faiss", "sklearn.metrics")  # thread pools to load before pinning
_DEFAULT_TIMER = "time.perf_counter"  # pytest-benchmark's default --benchmark-timer


class GuardSession:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.baseline_path = Path(config.getoption("cvbench_baseline"))
        self.baseline = G.Baseline.load(self.baseline_path)
        self.update = bool(config.getoption("cvbench_update"))
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
        if ref is None:  # no baseline yet: this run is the reference
            ref = G.calibration_summary(self.chunks)[f"{clock}_unit_s"]
        return ref


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
    g = parser.getgroup("cvbench speed guard")
    g.addoption("--benchmark", action="store_true", dest="cvbench_guard",
                help="run the benchmarks of tests/benchmarks (not the slow ones) and fail any "
                     "slower than tests/benchmarks/baseline.json allows (load-normalised)")
    g.addoption("--benchmark-all", action="store_true", dest="cvbench_all",
                help="with --benchmark: the slow end-to-end benchmarks too (what `make bench` runs)")
    g.addoption("--benchmark-update-baseline", action="store_true", dest="cvbench_update",
                help="with --benchmark: write this run's figures into the baseline instead of "
                     "failing on them (on an idle machine; see README 'Speed regressions')")
    g.addoption("--benchmark-baseline", default=str(G.BASELINE_PATH), dest="cvbench_baseline",
                metavar="PATH", help="baseline file (default: tests/benchmarks/baseline.json)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("cvbench_update") or config.getoption("cvbench_all"):
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
    config.stash[_KEY] = GuardSession(config)


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
    asserts only under --benchmark."""
    gs = request.config.stash.get(_KEY, None)
    checks = G.SpeedChecks(bench_name(request.node), gs is not None,
                           gs.checks if gs is not None else None)
    request.node.stash[_CHECKS] = checks
    return checks


def _record_rounds(fixture, recorder: G.RoundRecorder) -> bool:
    """Hook the recorder into pytest-benchmark's per-round stats.update (private API: without
    it the guard falls back to one chunk before and one after the test)."""
    make_stats = getattr(fixture, "_make_stats", None)
    if make_stats is None:
        return False

    def hooked(iterations):
        stats = make_stats(iterations)
        update = stats.update

        def update_and_calibrate(duration):
            update(duration)
            recorder.add(duration / iterations, duration)

        stats.update = update_and_calibrate
        recorder.begin()
        return stats

    fixture._make_stats = hooked
    return True


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
    confirmable = _confirmable(item, gs, name)
    recorder = G.RoundRecorder(gs.calibrate)
    with G.pinned_threads(G.THREADS):
        before = gs.calibrate()
        hooked = _record_rounds(fixture, recorder)
        try:
            result = yield  # the test; its failure propagates as it is
        except G.InvariantFailed as exc:
            if confirmable:
                gs.to_confirm[name] = f"1st: {exc.check.name} = {exc.check.value:.3g}"
            raise
        recorder.end()
        after = gs.calibrate()
    stats = getattr(getattr(fixture, "stats", None), "stats", None)
    if stats is None or not stats.data:
        return result
    clock = "cpu" if getattr(fixture, "_timer", None) in G.CPU_TIMERS else "wall"
    if hooked and recorder.rounds:
        m = recorder.measurement(name, clock)
    else:
        i = 0 if clock == "cpu" else 1
        m = G.Measurement.before_after(name, list(stats.data), before[i], after[i], clock)
    v = gs.baseline.compare(m)
    if name in gs.confirming:
        v.note = gs.confirming[name]
    gs.measurements.append(m)
    gs.verdicts.append(v)
    fixture.extra_info.update(guard_figure=round(m.figure, 5), guard_clock=clock,
                              calibration_unit_s=round(m.unit_s, 7),
                              calibration_chunks=len(m.chunks))
    errors = []
    checks = item.stash.get(_CHECKS, None)
    for label, seconds in checks.targets if checks else ():
        ref_s = m.figure * gs.reference_unit_s(clock)
        c = G.Check(m.name, f"{label}: s on the reference machine", ref_s, seconds, "at_most",
                    f"{m.median_s:.1f} s {clock} here")
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


def _machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    import numpy

    info = {"node": platform.node(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "load_avg_at_end": [round(x, 2) for x in load] if load else None}
    torch = sys.modules.get("torch")
    if torch:
        info["torch"] = torch.__version__
    return info


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    gs = session.config.stash.get(_KEY, None)
    if gs is None or not gs.update or not gs.measurements:
        return
    keep = gs.recordable()
    meta = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "pytest " + " ".join(session.config.invocation_params.args),
        "machine": _machine(),
        "threads": G.THREADS,
        "figure": "median over rounds of round / unit of the calibration chunks around it "
                  "(tests/benchmarks/guard.py)",
        "calibration": G.calibration_summary(gs.chunks),
    }
    gs.partial = gs.baseline.is_partial(m.name for m in keep)
    gs.baseline.updated(keep, meta).save(gs.baseline_path)
    gs.written = gs.baseline_path


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    gs = config.stash.get(_KEY, None)
    if gs is None:
        return
    tr = terminalreporter
    tr.section("cvbench speed guard")
    if not gs.verdicts and not gs.checks:
        tr.write_line("no guarded benchmark ran")
        return
    cal = G.calibration_summary(gs.chunks)
    ref = gs.baseline.reference_unit_s("cpu")
    ref_txt = f"the baseline's {ref * 1e3:.2f} ms" if ref else "no baseline yet"
    tr.write_line(f"figures: median over rounds of round / calibration unit (sqrt3(GEMM x stream x "
                  f"JPEG decode) of the chunks around it; {G.THREADS} thread). CPU unit now "
                  f"{cal.get('cpu_unit_s', 0) * 1e3:.2f} ms (median of {cal.get('chunks', 0)} "
                  f"chunks), {ref_txt}")
    tr.write_line(f"baseline: {gs.baseline_path}; tolerance +{gs.baseline.default_tolerance:.0%} "
                  f"unless the baseline sets one")
    tr.write_line(G.format_table(gs.verdicts, gs.checks))
    failed = [v for v in gs.verdicts if v.failed]
    missing = sorted(set(gs.baseline.benchmarks) - {v.name for v in gs.verdicts})
    if missing:
        tr.write_line(f"{len(missing)} baseline entries not run this session (e.g. slow ones "
                      f"without --benchmark-all)")
    if gs.update:
        if gs.written:
            kept = len(gs.recordable())
            partial = " (a partial refresh: the old meta kept, this run noted in its " \
                "partial_updates)" if gs.partial else ""
            tr.write_line(f"baseline written: {gs.written}: {kept} figures{partial}; "
                          f"{len(gs.failed_tests - gs.target_missed)} failed test(s) kept their "
                          f"old entry")
    elif failed:
        tr.write_line(f"{len(failed)} benchmark(s) slower than the baseline allows: "
                      + ", ".join(v.name for v in failed), red=True)
