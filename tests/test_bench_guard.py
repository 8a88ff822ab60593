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


_FP_A = {"cpu": "Intel Xeon", "cores": 2, "numpy": "2.4.6"}
_FP_B = {"cpu": "AMD EPYC", "cores": 2, "numpy": "2.4.6"}


def test_baseline_file_keeps_one_entry_per_machine(tmp_path):
    """A refresh writes its own machine's figures (and the revision) only; tolerances are
    every machine's; a machine without an entry sees tolerances and no figures."""
    a, b = G.machine_id(_FP_A), G.machine_id(_FP_B)
    assert a != b and a == G.machine_id(dict(reversed(list(_FP_A.items()))))
    file = G.BaselineFile({"version": G.BASELINE_VERSION, "default_tolerance": 0.5,
                           "tolerance_why": "measured",
                           "tolerances": {"a.py::test_decode": {"tolerance": 0.4, "why": "noisy"}}})
    file = file.with_entry(a, _FP_A, file.entry(a).updated(_run(), {"date": "1"}), "rev1")
    # on B, k-NN takes twice as long relative to the calibration (it does not transfer)
    b_run = _run(scale=3.0, slow={"b.py::test_knn": 2.0})[:2]
    file = file.with_entry(b, _FP_B, file.entry(b).updated(b_run, {"date": "2"}), "rev2")
    assert file.revision == "rev2" and sorted(file.machines) == sorted([a, b])
    assert file.machines[a]["fingerprint"] == _FP_A
    assert set(file.machines[a]["benchmarks"]["a.py::test_decode"]) == set(G.FIGURE_KEYS)
    # B's refresh left A's figures as they were; each machine judges by its own
    ea, eb = file.entry(a), file.entry(b)
    assert ea.figure("c.py::test_tiny") is not None and eb.figure("c.py::test_tiny") is None
    assert ea.meta == {"date": "1"} and eb.meta == {"date": "2"}
    assert ea.tolerance("a.py::test_decode") == eb.tolerance("a.py::test_decode") == 0.4
    assert ea.tolerance("b.py::test_knn") == 0.5
    # B's unchanged code passes against B's entry, and would "fail" against A's
    assert [eb.compare(m).verdict for m in b_run] == ["ok", "ok"]
    assert [ea.compare(m).verdict for m in b_run] == ["ok", "FAIL"]
    unknown = file.entry("0" * 12)
    assert not file.has_entry("0" * 12) and unknown.meta == {}
    assert unknown.figure("a.py::test_decode") is None and unknown.tolerance("a.py::test_decode") == 0.4
    path = tmp_path / "baseline.json"
    file.save(path)
    assert G.BaselineFile.load(path).to_dict() == file.to_dict()
    assert G.BaselineFile.load(path).extra == {"tolerance_why": "measured"}
    assert G.BaselineFile.load(tmp_path / "missing.json").machines == {}
    # a file of another version (version 2: one unkeyed set of figures) keeps its tolerances
    v2 = {"version": 2, "meta": {"date": "old"}, "default_tolerance": 0.5,
          "benchmarks": {"a.py::test_decode": {"figure": 1.0, "tolerance": 0.4, "why": "noisy"},
                         "b.py::test_knn": {"figure": 2.0}}}
    stale = G.BaselineFile(v2)
    assert stale.machines == {} and stale.revision is None
    assert stale.entry(a).figure("b.py::test_knn") is None
    assert stale.entry(a).tolerance("a.py::test_decode") == 0.4


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
    """`--benchmark` against this machine's own entry, end to end on a throw-away file; the
    entry's figures are set 10^9 off, so the verdicts do not depend on this machine's speed."""
    import importlib

    from tests.benchmarks.plugin import PRELOAD

    monkeypatch.setattr(G, "load_average", lambda: 0.0)  # an idle machine: the refresh may run
    monkeypatch.delenv(G.FINGERPRINT_ENV, raising=False)
    machine = G.machine_id(G.fingerprint())

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
    r.stdout.fnmatch_lines(["*time target missed: sum of 100: s (figure x this machine's unit*"])
    data = json.loads(baseline.read_text())
    assert list(data["machines"]) == [machine]  # this machine's entry, and only it
    entry = data["machines"][machine]
    assert list(entry["benchmarks"]) == ["test_x.py::test_blip", "test_x.py::test_spike",
                                         "test_x.py::test_sum", "test_x.py::test_target"]
    assert entry["meta"]["calibration"]["chunks"] >= 2 and entry["meta"]["revision"] is None
    assert entry["fingerprint"] == G.fingerprint()
    entry["benchmarks"]["test_x.py::test_sum"]["figure"] *= 1e-9
    for name in ("test_x.py::test_spike", "test_x.py::test_blip"):  # fail only beyond 10x
        data["tolerances"][name] = {"tolerance": 9.0}
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
    entry["benchmarks"]["test_x.py::test_sum"]["figure"] *= 1e18
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


# ---------------------------------------------------------------- machines without an entry


def _paired_rounds(seconds: float, slow: float = 1.0, n: int = 20):
    """Rounds here and at the base revision under a load that swings 1-1.8x from round to
    round (each round and its partner alike), with +-2% of noise of their own."""
    load = [1.0 + 0.2 * ((i * 7) % 5) for i in range(n)]
    base = [seconds * x for x in load]
    now = [seconds * slow * x * (1 + 0.02 * (-1) ** i) for i, x in enumerate(load)]
    return now, base


def test_base_revision_comparison_pairs_rounds_and_names_a_regression():
    name = "test_bench_tiny_knn.py::test_bench_knn[l2]"
    now, base = _paired_rounds(0.05)  # unchanged code
    v = G.compare_paired(name, now, base, 0.5, base="d5d4ca3eb8")
    assert v.verdict == "ok" and v.ratio == pytest.approx(1.0, abs=0.03) and v.rounds == 20
    now, base = _paired_rounds(0.05, slow=2.0)  # the doubled k-NN inner loop
    v = G.compare_paired(name, now, base, 0.5, base="d5d4ca3eb8")
    assert v.failed and v.ratio == pytest.approx(2.0, rel=0.03)
    assert v.message().startswith(f"speed regression in {name}: 2.00x the time of base revision "
                                  f"d5d4ca3eb8")
    assert v.baseline == pytest.approx(0.07) and v.unit == "s"  # median rounds, seconds
    # rounds without a partner (the base revision ran fewer) are left out
    assert G.compare_paired(name, [*now, 50.0, 50.0], base, 0.5).ratio == v.ratio
    # nothing to compare with: "new", with the reason, never a failure
    new = G.compare_paired("x.py::test_new", now, [], 0.5, detail="not at base")
    assert new.verdict == "new" and not new.failed and new.ratio is None
    table = G.format_table([v, new], [])
    assert "FAIL (> 1.50x)" in table and "new (not at base)" in table and " ms " in table


class _ScriptedSide:
    """A stand-in for against.BaseSide: replies from a script, records what it is told."""

    def __init__(self, replies, names=("x.py::test_a",)):
        self.replies, self.names, self.dead, self.sent = iter(replies), set(names), "", []

    def send(self, message):
        self.sent.append(message)

    def recv(self):
        return next(self.replies)


def test_pairing_runs_one_base_round_after_each_round_here():
    from tests.benchmarks.against import Pairing

    side = _ScriptedSide([{"round": 0.1}, {"round": 0.2}, {"round": 0.3},
                          {"done": "x.py::test_a", "outcome": "passed"}])
    p = Pairing(side, "x.py::test_a")
    for r in (1.0, 2.0, 3.0):
        p.add(r)
    assert side.sent == [{"run": "x.py::test_a"}, {"go": True}, {"go": True}]
    p.finish()
    assert side.sent[-1] == {"finish": True} and p.done["outcome"] == "passed"
    assert p.now == [1.0, 2.0, 3.0] and p.base == [0.1, 0.2, 0.3] and p.detail(side) == ""
    # the base revision's test ends first (fewer rounds there): this side goes on alone
    side = _ScriptedSide([{"round": 0.1}, {"done": "x.py::test_a", "outcome": "passed"}])
    p = Pairing(side, "x.py::test_a")
    for r in (1.0, 2.0, 3.0):
        p.add(r)
    p.finish()
    assert side.sent == [{"run": "x.py::test_a"}, {"go": True}] and p.base == [0.1]
    # failed there before its first round; or not there at all: nothing is sent
    side = _ScriptedSide([{"done": "x.py::test_a", "outcome": "failed", "error": "E"}])
    p = Pairing(side, "x.py::test_a")
    p.add(1.0)
    p.finish()
    assert p.base == [] and p.detail(side) == "failed at base"
    p = Pairing(side, "x.py::test_new")
    p.add(1.0)
    p.finish()
    assert p.side is None and p.detail(side) == "not at base" and len(side.sent) == 1


def test_fingerprint_names_the_processor_cores_and_libraries(monkeypatch):
    fp = G.fingerprint()
    assert {"cpu", "cores", "python", "numpy", "torch", "opencv", "scipy"} <= set(fp)
    assert fp["cores"] == os.cpu_count() and fp["numpy"] != "-"
    assert G.machine_id(G.fingerprint()) == G.machine_id(fp)  # stable
    other = G.fingerprint("cpu=Simulated CPU; cores=64")
    assert other["cpu"] == "Simulated CPU" and other["cores"] == 64
    assert G.machine_id(other) != G.machine_id(fp)
    with pytest.raises(ValueError, match="key=value"):
        G.fingerprint("cpu")


def test_refresh_is_refused_under_load(pytester, monkeypatch):
    assert G.refresh_refusal(2.0, 2) is None
    msg = G.refresh_refusal(2.5, 2)
    assert "1-minute load average is 2.50, more than this machine's 2 cores" in msg
    pytester.makepyfile(test_x="def test_sum(benchmark):\n    benchmark(sum, range(10))\n")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    baseline = pytester.path / "b.json"
    args = ["--benchmark", "--benchmark-update-baseline", "-p", "tests.benchmarks.plugin",
            "-p", "no:cacheprovider", "-p", "no:xdist", f"--benchmark-baseline={baseline}"]
    monkeypatch.setattr(G, "load_average", lambda: 2.0 * os.cpu_count() + 0.5)
    r = pytester.runpytest_inprocess(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*refusing to refresh the baseline: the 1-minute load average is*"])
    assert not baseline.exists()
    # an idle machine, but uncommitted changes: refused too (the refresh records HEAD)
    monkeypatch.setattr(G, "load_average", lambda: 0.0)
    _git(pytester.path, "init", "-q")
    _git(pytester.path, "add", "test_x.py")
    _git(pytester.path, "commit", "-q", "-m", "base")
    (pytester.path / "test_x.py").write_text("def test_sum(benchmark):\n    benchmark(sum, [])\n")
    r = pytester.runpytest_inprocess(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*1 tracked file(s) differ from it: test_x.py. Commit (or stash)*"])
    assert not baseline.exists()


def _git(root, *args):
    import subprocess

    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def test_base_checkout_is_cached_and_imports_its_own_package_dirs(tmp_path):
    """pyproject.toml maps `pkg.sub` to `sub/` (as cvbench.baselines to baselines/): the base
    checkout imports it from itself, and a second call reuses the checkout."""
    import subprocess
    import sys

    from tests.benchmarks import against as A

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "sub").mkdir()
    (repo / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "pkg" = "pkg", "pkg.sub" = "sub" }\n')
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "sub" / "__init__.py").write_text("VALUE = 1\n")
    assert A.package_links((repo / "pyproject.toml").read_text()) == {"pkg/sub": "sub"}
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    one = _git(repo, "rev-parse", "HEAD")
    (repo / "sub" / "__init__.py").write_text("VALUE = 2\n")
    _git(repo, "commit", "-q", "-am", "two")
    two = _git(repo, "rev-parse", "HEAD")

    def value(checkout):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, A.python_path(checkout)))}
        return subprocess.run([sys.executable, "-c", "import pkg.sub; print(pkg.sub.VALUE)"],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    cache = tmp_path / "cache"
    checkout, state = A.prepare_checkout(repo, one, cache)
    assert state == "created" and value(checkout) == "1"
    assert A.prepare_checkout(repo, one, cache) == (checkout, "cached")
    assert A.prepare_checkout(repo, two, cache) == (checkout, "moved") and value(checkout) == "2"
    assert A.resolve_base(repo, "HEAD~1", None, repo / "b.json")[0] == one
    assert A.resolve_base(repo, None, two, repo / "b.json")[0] == two
    with pytest.raises(A.AgainstError, match="not a commit of this clone"):
        A.resolve_base(repo, None, "f" * 40, repo / "b.json")
    held = A.lock(cache)
    with pytest.raises(A.AgainstError, match="another `pytest --benchmark`"):
        A.lock(cache)
    held.close()


_FAKE_CLOCK = '''
T = [0.0]


def now():  # the benchmarks' timer: what spend() added, plus a tick per reading
    T[0] += 1e-9
    return T[0]


def spend(seconds):
    T[0] += seconds
'''

_FAKE_KNN = '''
import fakeclock


def knn():
    for _ in range({loops}):  # the inner loop
        fakeclock.spend(0.01)


def decode():
    fakeclock.spend(0.003)
'''

_FAKE_BENCH = '''
from fakepkg.work import decode, knn


def test_bench_knn(benchmark):
    benchmark(knn)


def test_bench_decode(benchmark):
    benchmark(decode)


def test_bench_fixed(benchmark):
    assert {fixed}, "broken at this revision"
    benchmark(decode)
'''


def test_machine_without_an_entry_measures_the_base_revision_beside(pytester, monkeypatch):
    """`pytest --benchmark` end to end in a throw-away git repository whose baseline file has
    an entry for another machine only: the revision it records is checked out in a worktree and
    measured by a second pytest session, round by round with the working tree. A clean tree
    passes; a doubled inner loop fails, by name; a benchmark missing or broken at the base
    revision is "new". The benchmarks time a fake clock that they advance themselves, so every
    ratio is exact and nothing depends on this machine's speed or load."""
    import shutil

    root = pytester.path
    harness = root / "tests" / "benchmarks"
    harness.mkdir(parents=True)
    for name in ("guard", "against", "plugin"):
        shutil.copy(G.BASELINE_PATH.parent / f"{name}.py", harness / f"{name}.py")
    (root / "conftest.py").write_text('pytest_plugins = ["tests.benchmarks.plugin"]\n')
    (root / "fakeclock.py").write_text(_FAKE_CLOCK)
    (root / "fakepkg").mkdir()
    (root / "fakepkg" / "__init__.py").write_text("")
    (root / "fakepkg" / "work.py").write_text(_FAKE_KNN.format(loops=1))
    (harness / "test_x.py").write_text(_FAKE_BENCH.format(fixed=False))
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    base = _git(root, "rev-parse", "HEAD")
    other = {"cpu": "Some other CPU", "cores": 64}
    (harness / "baseline.json").write_text(json.dumps(
        {"version": G.BASELINE_VERSION, "revision": base, "default_tolerance": 0.5,
         "machines": {G.machine_id(other): {"fingerprint": other, "meta": {}, "benchmarks": {
             "test_x.py::test_bench_knn": {"figure": 1.0, "median_s": 1.0, "clock": "cpu"}}}}}))
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID", G.FINGERPRINT_ENV):
        monkeypatch.delenv(var, raising=False)
    args = ["--benchmark", "-p", "no:cacheprovider", "-p", "no:xdist",
            "--benchmark-timer=fakeclock.now", "--benchmark-max-time=0.05"]

    r = pytester.runpytest_subprocess(*args)  # the working tree is the base revision's code
    r.assert_outcomes(passed=2, failed=1)  # test_bench_fixed is broken at both
    out = r.stdout.str()
    assert f"measured against base revision {base[:10]} (the revision baseline.json records)" \
        in out and "(created)" in out
    r.stdout.fnmatch_lines(["*test_x.py::test_bench_knn * 10 ms * 10 ms * 1.00x * ok",
                            "*test_x.py::test_bench_decode * 3 ms * 3 ms * 1.00x * ok"])

    # the inner loop doubled, the broken benchmark fixed, a new one: only the loop fails
    (root / "fakepkg" / "work.py").write_text(_FAKE_KNN.format(loops=2))
    (harness / "test_x.py").write_text(_FAKE_BENCH.format(fixed=True) + (
        "\n\ndef test_bench_new(benchmark):\n    benchmark(decode)\n"))
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(passed=3, failed=1)
    assert "(cached)" in r.stdout.str()
    r.stdout.fnmatch_lines([
        f"*speed regression in test_x.py::test_bench_knn: 2.00x the time of base revision "
        f"{base[:10]}*",
        "*test_x.py::test_bench_knn * 20 ms * 10 ms * 20 ms * 2.00x * FAIL (> 1.50x)*",
        "*test_x.py::test_bench_decode * 1.00x * ok",
        "*test_x.py::test_bench_fixed * new (failed at base)",
        "*test_x.py::test_bench_new * new (not at base)",
        f"*1 benchmark(s) slower than base revision {base[:10]} allows: "
        f"test_x.py::test_bench_knn"])
