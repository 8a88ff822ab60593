"""The speed guard's comparison logic (tests/benchmarks/guard.py) on synthetic timings, and its
pytest wiring (tests/benchmarks/plugin.py) on a throw-away benchmark file."""

from __future__ import annotations

import contextlib
import json
import os

import pytest

from tests.benchmarks import guard as G


def _cal(unit: float) -> G.Calibration:
    return G.Calibration((unit, 2 * unit, 0.5 * unit))  # geometric mean = unit


def _measurement(name: str, rounds, chunk_units, blocks=None) -> G.Measurement:
    rounds = list(rounds)
    blocks = list(blocks) if blocks is not None else [0] * len(rounds)
    return G.Measurement(name, rounds, blocks, [_cal(u) for u in chunk_units])


def _run(scale: float = 1.0, slow: dict[str, float] | None = None) -> list[G.Measurement]:
    """Three benchmarks; every timing (rounds and calibration) x scale, some rounds x slow."""
    slow = slow or {}
    base = {"a.py::test_decode": 0.010, "b.py::test_knn": 0.120, "c.py::test_tiny": 0.0002}
    out = []
    for name, t in base.items():
        f = slow.get(name, 1.0)
        out.append(_measurement(name, [scale * f * t * (1 + 0.01 * i) for i in range(5)],
                                [scale * 0.003, scale * 0.0031]))
    return out


def _baseline(measurements, **tolerances) -> G.Baseline:
    b = G.Baseline().updated(measurements, {"date": "now"})
    for name, tol in tolerances.items():
        b.benchmarks[name]["tolerance"] = tol
    return b


def test_uniform_slowdown_cancels():
    baseline = _baseline(_run())
    verdicts = [baseline.compare(m) for m in _run(scale=2.0)]  # machine (or load) 2x slower
    assert [v.verdict for v in verdicts] == ["ok"] * 3
    assert all(v.ratio == pytest.approx(1.0, rel=1e-4) for v in verdicts)


def test_relative_slowdown_of_one_benchmark_fails_and_names_it():
    baseline = _baseline(_run())
    verdicts = {v.name: v for v in (baseline.compare(m) for m in
                                    _run(slow={"b.py::test_knn": 2.0}))}
    assert verdicts["b.py::test_knn"].failed
    assert verdicts["b.py::test_knn"].ratio == pytest.approx(2.0, rel=1e-4)
    assert "speed regression in b.py::test_knn" in verdicts["b.py::test_knn"].message()
    assert not verdicts["a.py::test_decode"].failed and not verdicts["c.py::test_tiny"].failed
    # the same 2x while the whole machine is also 3x slower: still caught, still alone
    verdicts = [baseline.compare(m) for m in _run(scale=3.0, slow={"b.py::test_knn": 2.0})]
    assert [v.name for v in verdicts if v.failed] == ["b.py::test_knn"]


def test_default_tolerance_and_override():
    baseline = _baseline(_run(), **{"c.py::test_tiny": 0.5})
    within = [baseline.compare(m) for m in _run(slow={"a.py::test_decode": 1.2})]
    assert within[0].verdict == "ok"  # +20% < +25%
    over = [baseline.compare(m) for m in _run(slow={"a.py::test_decode": 1.3})]
    assert over[0].verdict == "FAIL"
    tiny = [baseline.compare(m) for m in _run(slow={"c.py::test_tiny": 1.4})]
    assert tiny[2].verdict == "ok" and tiny[2].tolerance == 0.5  # its own +50%
    tiny = [baseline.compare(m) for m in _run(slow={"c.py::test_tiny": 1.6})]
    assert tiny[2].verdict == "FAIL"


def test_new_and_faster_benchmarks_do_not_fail():
    baseline = _baseline(_run()[:2])
    v = [baseline.compare(m) for m in _run(slow={"b.py::test_knn": 0.5})]
    assert v[2].verdict == "new" and not v[2].failed and v[2].ratio is None
    assert v[1].verdict == "faster" and not v[1].failed


def test_rounds_are_normalised_by_the_chunks_around_them():
    """A load change in the middle of a benchmark: rounds 2-3 and the chunks around them take
    twice as long. Round-by-round pairing cancels it; one unit for all rounds would not."""
    rounds = [0.01, 0.01, 0.02, 0.02]
    m = _measurement("x", rounds, [0.003, 0.003, 0.006, 0.006, 0.006], blocks=[0, 1, 2, 3])
    assert m.figure == pytest.approx(0.01 / 0.003)
    m_once = G.Measurement.before_after("x", rounds, _cal(0.003), _cal(0.003))
    assert m_once.figure == pytest.approx(0.015 / 0.003)


def test_round_recorder_interleaves_chunks():
    calls = []

    def calibrate():
        calls.append(len(calls))
        u = 0.001 * (1 + len(calls))
        return _cal(u), _cal(2 * u)

    rec = G.RoundRecorder(calibrate, interval_s=0.05)
    rec.begin()
    for _ in range(7):
        rec.add(0.02, 0.02)  # a chunk after every third round
    rec.end()
    assert rec.blocks == [0, 0, 0, 1, 1, 1, 2]
    assert len(rec.chunks) == 4  # before, after rounds 3 and 6, after the last
    cpu, wall = rec.measurement("x", "cpu"), rec.measurement("x", "wall")
    assert cpu.chunks[0].unit_s == pytest.approx(0.002)
    assert wall.figure == pytest.approx(cpu.figure / 2)
    rec.end()  # idempotent: the last block is closed already
    assert len(rec.chunks) == 4


def test_baseline_update_keeps_overrides_and_unmeasured_entries(tmp_path):
    old = _baseline(_run(), **{"a.py::test_decode": 0.4})
    old.benchmarks["a.py::test_decode"]["why"] = "noisy"
    old.benchmarks["gone.py::test_old"] = {"figure": 1.0, "median_s": 0.1, "clock": "cpu"}
    new = old.updated(_run(slow={"a.py::test_decode": 3.0})[:1], {"date": "later"})
    assert new.benchmarks["a.py::test_decode"]["tolerance"] == 0.4
    assert new.benchmarks["a.py::test_decode"]["why"] == "noisy"
    assert new.figure("a.py::test_decode") == pytest.approx(3 * old.figure("a.py::test_decode"),
                                                            rel=1e-3)
    assert new.figure("b.py::test_knn") == old.figure("b.py::test_knn")
    assert "gone.py::test_old" in new.benchmarks
    # partial (b, c and gone.py were not measured): the old meta stays, the update is noted
    assert new.meta["date"] == "now"
    assert new.meta["partial_updates"] == [{"date": "later", "benchmarks": ["a.py::test_decode"]}]
    full = old.updated(_run() + [_measurement("gone.py::test_old", [0.1], [0.003, 0.003])],
                       {"date": "latest"})
    assert full.meta == {"date": "latest"}
    path = tmp_path / "baseline.json"
    new.save(path)
    again = G.Baseline.load(path)
    assert again.to_dict() == new.to_dict()
    assert G.Baseline.load(tmp_path / "missing.json").benchmarks == {}
    # a baseline in other units (another version) keeps only its tolerance overrides
    data = json.loads(path.read_text())
    data["version"] = G.BASELINE_VERSION - 1
    stale = G.Baseline(data)
    assert stale.figure("b.py::test_knn") is None and stale.tolerance("a.py::test_decode") == 0.4


def test_table_has_one_row_per_benchmark_and_check():
    baseline = _baseline(_run()[:2])
    verdicts = [baseline.compare(m) for m in _run(slow={"b.py::test_knn": 2.0})]
    checks = [G.Check("e.py::test_engine", "engine / bare", 1.2, 1.1, "at_most")]
    table = G.format_table(verdicts, checks).splitlines()
    assert table[0].split() == ["benchmark", "median", "round", "baseline", "now", "ratio",
                                "verdict"]
    assert len(table) == 2 + 3 + 1
    knn = next(r for r in table if r.startswith("b.py::test_knn"))
    assert "2.00x" in knn and "FAIL (> 1.25x)" in knn
    assert next(r for r in table if r.startswith("c.py::")).endswith("new")
    assert table[-1].startswith("e.py::test_engine :: engine / bare") and table[-1].endswith("FAIL")


def test_time_interleaved_alternates_the_order():
    order, clock = [], iter(range(100))
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    t = G.time_interleaved(fns, 4, before_each={"a": lambda: order.append("reset")},
                           timer=lambda: float(next(clock)))
    assert order == ["reset", "a", "b", "b", "reset", "a", "reset", "a", "b", "b", "reset", "a"]
    assert t["a"] == [1.0] * 4 and t["b"] == [1.0] * 4
    assert G.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_speed_checks_assert_only_under_the_guard():
    off = G.SpeedChecks("t.py::test_x", active=False)
    c = off.at_least("cold / cached", 5.0, 20)
    assert not c.passed and off.sink == [c] and off.rounds(5) == 1
    on = G.SpeedChecks("t.py::test_x", active=True)
    assert on.rounds(5) == 5
    on.at_most("engine / bare", 1.05, 1.10)
    with pytest.raises(AssertionError, match=r"engine / bare = 1.2, expected <= 1.1 .*t.py::test_x"):
        on.at_most("engine / bare", 1.2, 1.10)


def test_calibration_chunk_times_every_workload_on_both_clocks():
    cpu, wall = G.CalibrationWorkload(stream_mb=1, gemm_reps=1, decode_reps=1).chunk()
    assert len(cpu.seconds) == len(wall.seconds) == len(G.WORKLOADS)
    assert all(s > 0 for s in cpu.seconds + wall.seconds)


_CHILD = """
import json, subprocess, sys
mib = int(sys.argv[1])
block = bytearray(mib * 2**20)
block[::4096] = b"x" * len(block[::4096])  # touch every page
if len(sys.argv) > 2:  # a grandchild holding more, waited for
    subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[3]], check=True)
print("noise")
print(json.dumps({"mib": mib}))
"""


def test_fresh_process_peak_rss_covers_short_lived_children_and_grandchildren():
    """However short-lived, the child's and a waited-for grandchild's peaks are counted
    (the kernel's high-water marks, not only the sampling)."""
    import sys

    run = G.run_fresh_process([sys.executable, "-c", _CHILD, "16", _CHILD, "160"],
                              interval=10.0)
    assert run.returncode == 0 and run.result() == {"mib": 16}
    assert run.peak_mib >= 160, run.peak_mib
    ballast = bytearray(400 * 2**20)  # this process now holds 400 MiB more ...
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = G.run_fresh_process([sys.executable, "-c", _CHILD, "16"], interval=10.0)
    del ballast
    assert small.result() == {"mib": 16}
    assert small.peak_mib < 200, small.peak_mib  # ... which is not the child's
    assert G.tree_rss_bytes() > 0
    failed = G.run_fresh_process([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert failed.returncode == 1
    with pytest.raises(RuntimeError, match="boom"):
        failed.result()


def test_tree_process_time_counts_waited_children():
    """A child's CPU seconds (as it reports them itself) are on the clock once it is waited for."""
    import subprocess
    import sys

    t0 = G.tree_process_time()
    out = subprocess.run([sys.executable, "-c", "import time; sum(i * i for i in range(10**6)); "
                          "print(time.process_time())"], check=True, capture_output=True, text=True)
    tick = 1 / os.sysconf("SC_CLK_TCK")  # os.times() counts whole clock ticks (10 ms here)
    assert G.tree_process_time() - t0 >= float(out.stdout) - 2 * tick
    assert G.tree_process_time in G.CPU_TIMERS


_BENCH_FILE = """
import os

CALLS = []


def test_sum(benchmark):
    assert benchmark(sum, range(2000)) == 1999000

def test_plain():
    assert True

def test_target(benchmark, speed_guard):
    speed_guard.target_seconds("sum of 100", 1e-12)  # missed on any machine
    benchmark(sum, range(100))

def test_spike(benchmark):  # with SPIKE set, 100x slower the first time it runs in a session
    CALLS.append("spike")
    first = os.environ.get("SPIKE") and CALLS.count("spike") == 1
    benchmark(sum, range(200_000 if first else 2000))

def test_blip(benchmark, speed_guard):  # with SPIKE set, its invariant fails the first time
    CALLS.append("blip")
    benchmark(sum, range(100))
    first = os.environ.get("SPIKE") and CALLS.count("blip") == 1
    speed_guard.at_least("blip ratio", 0.5 if first else 2.0, 1.0)
"""


def test_plugin_runs_updates_and_fails_by_name(pytester, monkeypatch):
    """`--benchmark` end to end on a throw-away file; the baseline figures are set 10^9 off, so
    the verdicts do not depend on this machine's speed."""
    import importlib

    from tests.benchmarks.plugin import PRELOAD

    for mod in PRELOAD:  # imported out here, so pytester's sys.modules snapshot keeps them
        with contextlib.suppress(ImportError):
            importlib.import_module(mod)
    pytester.makepyfile(test_x=_BENCH_FILE)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # pytest-benchmark turns off there
    baseline = pytester.path / "b.json"
    common = ["-p", "tests.benchmarks.plugin", "-p", "no:cacheprovider", "-p", "no:xdist",
              f"--benchmark-baseline={baseline}", "--benchmark-max-time=0.02"]
    r = pytester.runpytest_inprocess(*common)  # no --benchmark: no guard, nothing written
    r.assert_outcomes(passed=5)
    assert "cvbench speed guard" not in r.stdout.str() and not baseline.exists()
    r = pytester.runpytest_inprocess("--benchmark", "--benchmark-update-baseline", *common)
    r.assert_outcomes(passed=4, failed=1)  # the missed target fails, and its figure is written
    r.stdout.fnmatch_lines(["*time target missed: sum of 100: s on the reference machine*"])
    data = json.loads(baseline.read_text())
    assert list(data["benchmarks"]) == ["test_x.py::test_blip", "test_x.py::test_spike",
                                        "test_x.py::test_sum", "test_x.py::test_target"]
    assert data["meta"]["calibration"]["chunks"] >= 2
    data["benchmarks"]["test_x.py::test_sum"]["figure"] *= 1e-9
    for name in ("test_x.py::test_spike", "test_x.py::test_blip"):  # fail only beyond 10x
        data["benchmarks"][name]["tolerance"] = 9.0
    baseline.write_text(json.dumps(data))
    guarded = ["--benchmark", "-k", "not target", *common]
    r = pytester.runpytest_inprocess(*guarded)  # a regression: fails, re-measured, fails again
    r.assert_outcomes(passed=3, failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*speed regression in test_x.py::test_sum:*",
                            "*test_x.py::test_sum*FAIL (> 1.25x) (re-measured; 1st *x)*"])
    # a one-off spike of a figure, and of a ratio invariant, pass on their second measurement
    monkeypatch.setenv("SPIKE", "1")
    r = pytester.runpytest_inprocess(*guarded)
    r.assert_outcomes(passed=3, failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*test_x.py::test_spike*ok (re-measured; 1st *x)*"])  # 1st ~100x
    r.stdout.fnmatch_lines(["*test_x.py::test_blip*ok (re-measured; 1st: blip ratio = 0.5)*"])
    assert r.stdout.str().count("test_x.py::test_spike ") == 1  # one row, the 2nd measurement
    monkeypatch.delenv("SPIKE")
    data["benchmarks"]["test_x.py::test_sum"]["figure"] *= 1e18
    baseline.write_text(json.dumps(data))
    r = pytester.runpytest_inprocess(*guarded)
    r.assert_outcomes(passed=4, deselected=1)
    r.stdout.fnmatch_lines(["*test_x.py::test_sum*faster"])
    assert "re-measured" not in r.stdout.str()


def test_plain_runs_collect_the_benchmarks_only_when_named(tmp_path):
    from tests.benchmarks.plugin import BENCH_DIR, names_benchmarks

    root = BENCH_DIR.parents[1]
    assert names_benchmarks(["tests/benchmarks"], root)
    assert names_benchmarks(["tests/benchmarks/test_bench_sift.py::test_pyramid_encoding"], root)
    assert names_benchmarks(["benchmarks/test_bench_images.py"], root / "tests")
    assert not names_benchmarks(["tests"], root) and not names_benchmarks([], root)
    assert not names_benchmarks(["tests/test_knn.py", "tests/benchmarks_other"], root)
    assert not names_benchmarks(["tests/benchmarks"], tmp_path)
