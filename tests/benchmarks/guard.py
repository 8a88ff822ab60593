"""The speed guard's plain logic (no pytest here; the wiring is tests/benchmarks/plugin.py, the
base revision's side of a comparison tests/benchmarks/against.py).

Baselines are kept per machine: tests/benchmarks/baseline.json holds one entry per machine,
keyed by a fingerprint of its processor model, core count, Python's and the main libraries'
versions (`fingerprint`, `machine_id`; `BaselineFile`). A benchmark is judged one of two ways:

- **This machine has an entry of its own**: the benchmark's figure (below) is compared with
  the figure an earlier refresh measured on this machine.
- **It has none**: the baseline revision (the one the file records, or --benchmark-against
  REF) is measured now, on this machine, in a git worktree, its rounds interleaved one by one
  with the working tree's (against.py, like `asv continuous`); the ratio is the median over
  paired rounds of this tree's round / the base revision's (`compare_paired`). Nothing is
  divided by a calibration there: the calibration does not transfer across processors (issue
  22: a 2-core AMD EPYC ran it 2.2x faster than the Intel Xeon that wrote the first baseline,
  but the benchmarks only as fast or a little faster, so unchanged code "failed" at 1.5-1.9x).

A figure: a guarded benchmark's rounds are interleaved with short *calibration chunks*: one
just before its first round, then one after every ~50 ms of rounds (after every round when
rounds are longer), and one after its last round. A chunk times three fixed workloads:

    gemm    five float32 256x256 matrix products (compute, BLAS)
    stream  one sum over a 16 MB float32 array (memory bandwidth, caches)
    decode  five decodes of a generated 256x256 JPEG (integer, branchy; PIL)

Its *unit* is the geometric mean of the three times. Each round is divided by the unit of the
two chunks around it, and the benchmark's figure is the median of these ratios (dimensionless
"calibration units"). A load that halves this process' share of the CPU moves the round and
the chunks next to it alike, so on one machine the figure stays; across machines it does not
(above), which is why entries are per machine.

How that was chosen (measured on this shared 2-core KVM machine at load 0.4-6; five hot paths,
~40 repeats each; spread = p90 / p10 of a benchmark's figure over the repeats):

- wall clock, no calibration: 1.3-2.2; wall clock over calibrations timed once before and
  once after each benchmark: 1.2-1.6. The host's speed per CPU second itself swings within a
  second (CPU time alone, uncalibrated: 1.2-1.6), so before/after calibration cannot follow it.
- CPU time (time.process_time) with the round-by-round chunks above: 1.10-1.13 (1.30 for the
  interpreter-bound bootstrap), the best of every clock, statistic and workload mix tried.
  A single workload did worse (GEMM alone 1.16-1.30, decode alone 1.13-1.30).
- median of rounds, not minimum: as good or better in every case (and it matches the chunks,
  which are medians in effect); the minimum of a long round and of a short one are not alike.

So under the guard pytest-benchmark times in CPU seconds of this process (the default), and
every thread pool is pinned to THREADS threads: a 1-thread figure scales with the share of one
core; a 2-thread one on a 2-core machine shared with others does not. The end-to-end benchmarks
run their workload in a fresh process (run_fresh_process, tests/benchmarks/e2e.py), so that the
peak RSS of its process tree is its own: one with joblib workers is timed in wall seconds
(``@pytest.mark.benchmark(timer=time.perf_counter)``: its target is a wall time), a
single-process one in the child's CPU seconds (``timer=tree_process_time``).

Verdicts: "FAIL" when the ratio (figure / baseline figure, or the paired ratio against the
base revision) > 1 + tolerance (25% unless the baseline file sets its "default_tolerance" or
a benchmark its own in "tolerances"; the committed one sets 50%, see its "tolerance_why"),
"faster" when below 1 / (1 + tolerance) (refresh the baseline if that was intended), "new"
when there is nothing to compare with (no figure in this machine's entry; a benchmark the base
revision lacks, or one that failed there), else "ok".

Confirmation: on this machine a benchmark's figure still moves between runs, by up to ~1.3x
now and then (benchmarks and calibration do not share the host's contention alike), so with
40-odd benchmarks a run would fail one by chance every so often. A non-slow benchmark that
fails the guard's own checks (its figure, or a ratio invariant) is therefore measured once
more, with fresh fixtures, and only that second measurement counts: a real regression fails
both, a passing blip rarely repeats. The table notes what the first one saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THREADS = 1  # BLAS / OpenMP / torch / OpenCV threads while a guarded benchmark runs
DEFAULT_TOLERANCE = 0.25
CHUNK_INTERVAL_S = 0.05  # a calibration chunk after every this many seconds of rounds
BASELINE_PATH = Path(__file__).resolve().parent / "baseline.json"
BASELINE_VERSION = 3
WORKLOADS = ("gemm", "stream", "decode")


def tree_process_time() -> float:
    """CPU seconds of this process plus those of its children that have been waited for
    (os.times): the clock of a benchmark whose work runs in a child process."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


CPU_TIMERS = (time.process_time, time.thread_time, tree_process_time)


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """One calibration chunk on one clock: seconds per workload (gemm, stream, decode)."""

    seconds: tuple[float, ...]

    @property
    def unit_s(self) -> float:
        return math.exp(sum(math.log(s) for s in self.seconds) / len(self.seconds))

    def scaled(self, factor: float) -> Calibration:
        return Calibration(tuple(s * factor for s in self.seconds))


def calibration_unit(before: Calibration, after: Calibration) -> float:
    """The unit of the rounds between two chunks: each workload averaged over both chunks,
    then their geometric mean."""
    return Calibration(tuple((a + b) / 2 for a, b in zip(before.seconds, after.seconds,
                                                         strict=True))).unit_s


class CalibrationWorkload:
    """The fixed workloads; `chunk()` (~7 ms of CPU on this machine) times each once on both
    clocks and returns (cpu, wall). Call it with the benchmarks' thread pinning in force."""

    def __init__(self, gemm_side: int = 256, gemm_reps: int = 5, stream_mb: int = 16,
                 jpeg_side: int = 256, decode_reps: int = 5):
        import numpy as np
        from PIL import Image

        self.gemm_reps, self.decode_reps = gemm_reps, decode_reps
        rng = np.random.default_rng(0)
        self._a = rng.random((gemm_side, gemm_side), dtype=np.float32)
        self._big = rng.random(stream_mb * 2**18, dtype=np.float32)
        # a smooth image (a JPEG of noise would be unrepresentatively expensive to decode)
        yy, xx = np.mgrid[0:jpeg_side, 0:jpeg_side]
        img = np.stack([(xx * 0.7 + 40 * np.sin(yy / 9.0)), (yy * 0.6 + 30 * np.cos(xx / 7.0)),
                        (xx + yy) * 0.4], axis=-1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        self._jpeg = buf.getvalue()
        for fn in self._fns():  # warm: page faults, BLAS buffers, decoder tables
            fn()

    def _gemm(self) -> None:
        a = self._a
        for _ in range(self.gemm_reps):
            a @ a  # noqa: B018  (the product is the work)

    def _stream(self) -> None:
        self._big.sum()

    def _decode(self) -> None:
        from PIL import Image

        for _ in range(self.decode_reps):
            with Image.open(io.BytesIO(self._jpeg)) as im:
                im.load()

    def _fns(self):
        return (self._gemm, self._stream, self._decode)

    def chunk(self) -> tuple[Calibration, Calibration]:
        cpu, wall = [], []
        for fn in self._fns():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return Calibration(tuple(cpu)), Calibration(tuple(wall))


@contextlib.contextmanager
def pinned_threads(n: int = THREADS):
    """BLAS/OpenMP (threadpoolctl), torch and OpenCV limited to n threads, then restored.
    Only libraries already loaded are reached, so import them first."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    cv2 = sys.modules.get("cv2")
    t_before = torch.get_num_threads() if torch else None
    c_before = cv2.getNumThreads() if cv2 else None
    try:
        if torch:
            torch.set_num_threads(n)
        if cv2:
            cv2.setNumThreads(n)
        with threadpool_limits(n):
            yield
    finally:
        if torch:
            torch.set_num_threads(t_before)
        if cv2:
            cv2.setNumThreads(c_before)


class RoundRecorder:
    """Interleaves calibration chunks with a benchmark's rounds (see the module docstring).
    `calibrate()` returns (cpu, wall) chunks; `add(round_s, elapsed_s)` after every round
    (round_s per iteration, elapsed_s the round's whole time); `end()` after the last."""

    def __init__(self, calibrate: Callable[[], tuple[Calibration, Calibration]],
                 interval_s: float = CHUNK_INTERVAL_S):
        self.calibrate, self.interval_s = calibrate, interval_s
        self.rounds: list[float] = []
        self.blocks: list[int] = []
        self.chunks: list[tuple[Calibration, Calibration]] = []
        self._since = 0.0

    def begin(self) -> None:
        self.chunks.append(self.calibrate())
        self._since = 0.0

    def add(self, round_s: float, elapsed_s: float) -> None:
        if not self.chunks:
            self.begin()
        self.rounds.append(round_s)
        self.blocks.append(len(self.chunks) - 1)
        self._since += elapsed_s
        if self._since >= self.interval_s:
            self.chunks.append(self.calibrate())
            self._since = 0.0

    def end(self) -> None:
        if self.rounds and self.blocks[-1] == len(self.chunks) - 1:
            self.chunks.append(self.calibrate())

    def measurement(self, name: str, clock: str) -> Measurement:
        i = 0 if clock == "cpu" else 1
        return Measurement(name, list(self.rounds), list(self.blocks),
                           [c[i] for c in self.chunks], clock)


# ---------------------------------------------------------------- baseline and verdicts


@dataclass
class Measurement:
    """One guarded benchmark of this run: its rounds (seconds per iteration, on `clock`), the
    block of each (round i lies between chunks[blocks[i]] and chunks[blocks[i] + 1])."""

    name: str
    rounds: list[float]
    blocks: list[int]
    chunks: list[Calibration]
    clock: str = "cpu"

    def _unit(self, b: int) -> float:
        return calibration_unit(self.chunks[b], self.chunks[b + 1])

    @property
    def figure(self) -> float:
        return statistics.median(r / self._unit(b) for r, b in zip(self.rounds, self.blocks,
                                                                   strict=True))

    @property
    def median_s(self) -> float:
        return statistics.median(self.rounds)

    @property
    def unit_s(self) -> float:
        return statistics.median(self._unit(b) for b in sorted(set(self.blocks)))

    @classmethod
    def before_after(cls, name: str, rounds: list[float], before: Calibration,
                     after: Calibration, clock: str = "cpu") -> Measurement:
        """All rounds between one chunk before and one after."""
        return cls(name, list(rounds), [0] * len(rounds), [before, after], clock)


@dataclass
class Verdict:
    """One benchmark judged. Against this machine's entry: `baseline` and `now` are figures
    (calibration units) and the ratio is now / baseline. Against the base revision: they are
    median rounds in seconds (unit "s") and the ratio is `paired`, the median over paired
    rounds of this tree's round / the base revision's (compare_paired)."""

    name: str
    baseline: float | None
    now: float
    tolerance: float
    median_s: float
    rounds: int
    clock: str = "cpu"
    note: str = ""  # e.g. what the first measurement saw, when this one confirms it
    paired: float | None = None
    unit: str = "calibration units"
    base: str = ""  # the base revision (against it), or ""
    detail: str = ""  # why there is nothing to compare with, when that is so

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        return None if self.baseline is None else self.now / self.baseline

    @property
    def verdict(self) -> str:
        r = self.ratio
        if r is None:
            return "new"
        if r > 1 + self.tolerance:
            return "FAIL"
        if r < 1 / (1 + self.tolerance):
            return "faster"
        return "ok"

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def message(self) -> str:
        allowed = f"over the {1 + self.tolerance:.2f}x allowed"
        if self.paired is not None:
            return (f"speed regression in {self.name}: {self.ratio:.2f}x the time of base revision "
                    f"{self.base} (median over {self.rounds} rounds, each paired with a round of "
                    f"the base revision run next to it), {allowed} (median round "
                    f"{_fmt_s(self.now)} {self.clock} here, {_fmt_s(self.baseline)} at "
                    f"{self.base})")
        return (f"speed regression in {self.name}: {self.now:.4g} calibration units vs baseline "
                f"{self.baseline:.4g} = {self.ratio:.2f}x, {allowed} (median round "
                f"{self.median_s * 1e3:.3g} ms {self.clock} of {self.rounds}; baseline: this "
                f"machine's entry in tests/benchmarks/{BASELINE_PATH.name})")


def compare_paired(name: str, now_rounds: list[float], base_rounds: list[float],
                   tolerance: float, clock: str = "cpu", base: str = "",
                   detail: str = "") -> Verdict:
    """This tree's rounds against the base revision's, round i against round i (each base round
    ran right after this tree's, so a change of load or host speed hits both). Rounds without
    a partner are left out; none at all (the base revision lacks the benchmark, or it failed
    there before its first round: `detail` says which) gives "new"."""
    n = min(len(now_rounds), len(base_rounds))
    now_s = statistics.median(now_rounds) if now_rounds else math.nan
    if n == 0:
        return Verdict(name, None, now_s, tolerance, now_s, len(now_rounds), clock, unit="s",
                       base=base, detail=detail)
    return Verdict(name, statistics.median(base_rounds[:n]), statistics.median(now_rounds[:n]),
                   tolerance, now_s, n, clock, paired=paired_ratio(now_rounds[:n], base_rounds[:n]),
                   unit="s", base=base)


class Baseline:
    """One machine's view of the baseline file: {"meta", "default_tolerance", "benchmarks":
    {name: {"figure", "median_s", "clock", "tolerance"?, "why"?}}}; "tolerance" and its reason
    "why" are set by hand (the file's "tolerances", shared by every machine) and kept by
    refreshes. BaselineFile.entry() makes one, BaselineFile.with_entry() stores one."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        data = dict(data or {})
        self.meta: dict[str, Any] = dict(data.get("meta", {}))
        self.default_tolerance = float(data.get("default_tolerance", DEFAULT_TOLERANCE))
        self.benchmarks: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in dict(data.get("benchmarks", {})).items()}

    def figure(self, name: str) -> float | None:
        v = self.benchmarks.get(name, {}).get("figure")
        return None if v is None else float(v)

    def tolerance(self, name: str) -> float:
        return float(self.benchmarks.get(name, {}).get("tolerance", self.default_tolerance))

    def reference_unit_s(self, clock: str = "wall") -> float | None:
        """Median calibration unit (s) of the run that recorded the baseline."""
        v = self.meta.get("calibration", {}).get(f"{clock}_unit_s")
        return None if v is None else float(v)

    def compare(self, m: Measurement) -> Verdict:
        return Verdict(m.name, self.figure(m.name), m.figure, self.tolerance(m.name), m.median_s,
                       len(m.rounds), m.clock)

    def is_partial(self, measured: Iterable[str]) -> bool:
        """Whether a refresh measuring these names leaves some of this baseline's figures."""
        return bool(self.meta) and bool({k for k, v in self.benchmarks.items() if "figure" in v}
                                        - set(measured))

    def updated(self, measurements: Iterable[Measurement], meta: Mapping[str, Any]) -> Baseline:
        """A new baseline: these figures replace theirs (tolerance overrides are kept), entries
        not measured this time stay as they were. `meta` replaces the old one when every
        figure of the old baseline was measured again; a partial refresh (-k, a failed test)
        keeps the old meta, whose calibration the figures left alone (and the time targets)
        refer to, and appends its date, command and benchmarks to meta["partial_updates"]."""
        measurements = list(measurements)
        out = Baseline(self.to_dict())
        measured = {m.name for m in measurements}
        if self.is_partial(measured):
            note = {k: meta[k] for k in ("date", "command", "revision") if k in meta}
            note["benchmarks"] = sorted(measured)
            out.meta = dict(self.meta)
            out.meta["partial_updates"] = [*self.meta.get("partial_updates", []), note]
        else:
            out.meta = dict(meta)
        for m in measurements:
            entry = {"figure": _sig(m.figure), "median_s": _sig(m.median_s), "clock": m.clock}
            for key in ("tolerance", "why"):  # hand-set overrides and their reasons stay
                if key in self.benchmarks.get(m.name, {}):
                    entry[key] = self.benchmarks[m.name][key]
            out.benchmarks[m.name] = entry
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "default_tolerance": self.default_tolerance,
                "benchmarks": {k: self.benchmarks[k] for k in sorted(self.benchmarks)}}


FIGURE_KEYS = ("figure", "median_s", "clock")  # what a machine's entry holds per benchmark
TOLERANCE_KEYS = ("tolerance", "why")  # what the file's "tolerances" hold (every machine's)


class BaselineFile:
    """tests/benchmarks/baseline.json, version 3:

        {"version": 3,
         "revision": the commit the latest refresh measured: what a machine without an entry
                     of its own measures beside the working tree,
         "default_tolerance": 0.5, "tolerance_why": "...",
         "tolerances": {name: {"tolerance": 0.75, "why": "..."}},   set by hand, every machine
         "machines": {machine_id: {"fingerprint": {...}, "meta": {...},
                                   "benchmarks": {name: {"figure", "median_s", "clock"}}}}}

    A refresh replaces its own machine's entry and the revision, nothing else. A file of
    another version keeps only its tolerances (its figures are in other units or unkeyed)."""

    def __init__(self, data: Mapping[str, Any] | None = None):
        data = dict(data or {})
        self.revision: str | None = data.get("revision")
        self.default_tolerance = float(data.get("default_tolerance", DEFAULT_TOLERANCE))
        self.extra = {k: v for k, v in data.items() if k not in (
            "version", "revision", "default_tolerance", "tolerances", "machines", "benchmarks",
            "meta")}
        self.tolerances: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in dict(data.get("tolerances", {})).items()}
        self.machines: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in dict(data.get("machines", {})).items()}
        if data and int(data.get("version", 0)) != BASELINE_VERSION:
            self.machines, self.revision = {}, None
            for name, v in dict(data.get("benchmarks", {})).items():  # version 2's overrides
                if "tolerance" in v:
                    self.tolerances[name] = {k: v[k] for k in TOLERANCE_KEYS if k in v}

    @classmethod
    def load(cls, path: Path) -> BaselineFile:
        path = Path(path)
        if not path.is_file():
            return cls()
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def has_entry(self, machine: str) -> bool:
        return machine in self.machines

    def entry(self, machine: str) -> Baseline:
        """This machine's figures with every machine's tolerances (figures none when it has no
        entry: then the view only says tolerances)."""
        mine = self.machines.get(machine, {})
        figures = dict(mine.get("benchmarks", {}))
        benchmarks = {name: {**dict(figures.get(name, {})), **dict(self.tolerances.get(name, {}))}
                      for name in sorted(set(figures) | set(self.tolerances))}
        return Baseline({"meta": mine.get("meta", {}), "default_tolerance": self.default_tolerance,
                         "benchmarks": benchmarks})

    def with_entry(self, machine: str, fingerprint: Mapping[str, Any], baseline: Baseline,
                   revision: str | None) -> BaselineFile:
        """A copy with this machine's entry replaced by `baseline`'s figures and meta (its
        tolerances are the file's, left as they are), and the revision it measured."""
        out = BaselineFile(self.to_dict())
        out.machines[machine] = {
            "fingerprint": dict(fingerprint), "meta": dict(baseline.meta),
            "benchmarks": {name: {k: v[k] for k in FIGURE_KEYS if k in v}
                           for name, v in sorted(baseline.benchmarks.items()) if "figure" in v}}
        if revision is not None:
            out.revision = revision
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": BASELINE_VERSION, "revision": self.revision,
                "default_tolerance": self.default_tolerance, **self.extra,
                "tolerances": {k: self.tolerances[k] for k in sorted(self.tolerances)},
                "machines": {k: self.machines[k] for k in sorted(self.machines)}}

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


# ---------------------------------------------------------------- machines


# fingerprint field: the distributions that provide it (the first one installed counts)
LIBRARIES = {
    "numpy": ("numpy",), "scipy": ("scipy",), "scikit-learn": ("scikit-learn",),
    "torch": ("torch",), "pillow": ("pillow",), "faiss": ("faiss-cpu",),
    "opencv": ("opencv-contrib-python-headless", "opencv-python-headless",
               "opencv-contrib-python", "opencv-python"),
}
FINGERPRINT_ENV = "CVBENCH_BENCH_FINGERPRINT"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fingerprint(overrides: str | None = None) -> dict[str, Any]:
    """What a machine's baseline entry is keyed by: processor model, logical cores, Python's and
    the main libraries' versions ("-" for one not installed). `overrides` ("key=value;..."; the
    plugin passes $CVBENCH_BENCH_FINGERPRINT) replaces or adds fields: a way to act as a
    machine without an entry of its own."""
    from importlib import metadata

    fp: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                          "python": platform.python_version()}
    for name, dists in LIBRARIES.items():
        fp[name] = "-"
        for dist in dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                fp[name] = metadata.version(dist)
                break
    for item in filter(str.strip, (overrides or "").split(";")):
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not key:
            raise ValueError(f"{FINGERPRINT_ENV}: expected key=value[;key=value], got {item!r}")
        fp[key] = int(value) if key == "cores" else value
    return fp


def machine_id(fp: Mapping[str, Any]) -> str:
    """The key of a machine's baseline entry: a digest of its fingerprint."""
    return hashlib.sha256(json.dumps(dict(fp), sort_keys=True).encode()).hexdigest()[:12]


def describe_machine(fp: Mapping[str, Any]) -> str:
    return f"{fp.get('cpu')} x{fp.get('cores')}, Python {fp.get('python')}, " + ", ".join(
        f"{k} {v}" for k, v in fp.items() if k not in ("cpu", "cores", "python"))


def load_average() -> float:
    """The 1-minute load average (what a refresh checks before it starts)."""
    return os.getloadavg()[0]


def refresh_refusal(load_1min: float, cores: int) -> str | None:
    """Why a refresh must not start now (None: it may): figures written under a load beyond
    the cores are that load's, and would judge every later run on this machine."""
    if load_1min > cores:
        return (f"refusing to refresh the baseline: the 1-minute load average is "
                f"{load_1min:.2f}, more than this machine's {cores} cores. Figures measured now "
                f"would be this load's. Wait until the machine is idle (see `uptime`), then run "
                f"the refresh again.")
    return None


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def calibration_summary(chunks: Iterable[tuple[Calibration, Calibration]]) -> dict[str, Any]:
    """Medians over a run's chunks, per clock (what the baseline's meta records)."""
    chunks = list(chunks)
    if not chunks:
        return {}
    out: dict[str, Any] = {"chunks": len(chunks), "workloads": list(WORKLOADS)}
    for i, clock in enumerate(("cpu", "wall")):
        out[f"{clock}_unit_s"] = _sig(statistics.median(c[i].unit_s for c in chunks))
        out[f"{clock}_seconds"] = [_sig(statistics.median(c[i].seconds[k] for c in chunks))
                                   for k in range(len(WORKLOADS))]
    return out


# ---------------------------------------------------------------- ratio invariants and targets


@dataclass
class Check:
    """A ratio invariant or a time target, measured inside one test."""

    test: str
    name: str
    value: float
    bound: float
    kind: str  # "at_most" or "at_least"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.value <= self.bound if self.kind == "at_most" else self.value >= self.bound

    def message(self) -> str:
        op = "<=" if self.kind == "at_most" else ">="
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.name} = {self.value:.3g}, expected {op} {self.bound:g}{extra} [{self.test}]"


def time_interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int,
                     before_each: Mapping[str, Callable[[], Any]] | None = None,
                     timer: Callable[[], float] = time.process_time) -> dict[str, list[float]]:
    """Seconds of each function on `timer` (CPU seconds of this process by default: the sides
    of a ratio run in-process, single-threaded), `rounds` times, interleaved (A B, then B A,
    ...), so a change of load or host speed hits every side alike. `before_each[name]` runs
    untimed before that function (e.g. emptying a cache for the cold side)."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            if before_each and n in before_each:
                before_each[n]()
            t0 = timer()
            fns[n]()
            out[n].append(timer() - t0)
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i] / den[i] (rounds taken side by side)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


class InvariantFailed(AssertionError):
    """A ratio invariant failed under the guard (the Check is `.check`)."""

    def __init__(self, check: Check):
        super().__init__(f"ratio invariant failed: {check.message()}")
        self.check = check


class SpeedChecks:
    """What a benchmark test uses (the `speed_guard` fixture): round counts, interleaved
    timing (time_interleaved), ratio invariants and time targets. Asserts only when the guard is on
    (`pytest --benchmark`, `make bench`); otherwise it records, so `make test`'s single fast
    pass never fails on load."""

    def __init__(self, test: str, active: bool, sink: list[Check] | None = None,
                 enforce: bool = True):
        self.test, self.active, self.enforce = test, active, enforce
        self.sink = sink if sink is not None else []
        self.targets: list[tuple[str, float]] = []

    def rounds(self, guarded: int, fast: int = 1) -> int:
        return guarded if self.active else fast

    def interleave(self, fns: Mapping[str, Callable[[], Any]], rounds: int,
                   before_each: Mapping[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
        """time_interleaved; once each where nothing is enforced (the base revision's side of a
        comparison, whose invariants are not checked: only its benchmark's rounds count)."""
        return time_interleaved(fns, rounds if self.enforce else 1, before_each)

    def _check(self, name: str, value: float, bound: float, kind: str, detail: str) -> Check:
        c = Check(self.test, name, float(value), float(bound), kind, detail)
        self.sink.append(c)
        if self.active and self.enforce and not c.passed:
            raise InvariantFailed(c)
        return c

    def at_most(self, name: str, value: float, bound: float, detail: str = "") -> Check:
        return self._check(name, value, bound, "at_most", detail)

    def at_least(self, name: str, value: float, bound: float, detail: str = "") -> Check:
        return self._check(name, value, bound, "at_least", detail)

    def target_seconds(self, label: str, seconds: float) -> None:
        """This test's benchmark must take at most `seconds` on the reference machine: its
        figure times the baseline's median calibration unit (on the benchmark's clock; checked
        by the guard after the test)."""
        self.targets.append((label, float(seconds)))


# ---------------------------------------------------------------- the table


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def _fmt_value(v: Verdict, x: float | None) -> str:
    return _fmt_s(x) if v.unit == "s" and x is not None else _fmt(x)


def format_table(verdicts: list[Verdict], checks: list[Check]) -> str:
    """One table: benchmark, baseline, now, ratio, verdict (figures against this machine's
    entry; median rounds against the base revision); then the checks."""
    head = ("benchmark", "median round", "baseline", "now", "ratio", "verdict")
    rows = [(v.name, f"{_fmt_s(v.median_s)} {v.clock}", _fmt_value(v, v.baseline),
             _fmt_value(v, v.now),
             "-" if v.ratio is None else f"{v.ratio:.2f}x",
             (v.verdict if v.verdict != "FAIL" else f"FAIL (> {1 + v.tolerance:.2f}x)")
             + (f" ({v.detail})" if v.detail else "")
             + (f" (re-measured; {v.note})" if v.note else ""))
            for v in verdicts]
    for c in checks:
        op = "<=" if c.kind == "at_most" else ">="
        rows.append((f"{c.test} :: {c.name}", "", f"{op} {c.bound:g}", f"{c.value:.3g}", "",
                     "ok" if c.passed else "FAIL"))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ---------------------------------------------------------------- end-to-end runs: a fresh process tree


def _proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss_bytes(root: int | None = None) -> int:
    """Resident memory of a process and all its descendants now (Linux /proc)."""
    root = os.getpid() if root is None else root
    kids = _proc_children()
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass
class ProcessRun:
    """What run_fresh_process saw: exit status, output, and the peak resident memory of the
    child's process tree."""

    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    def result(self) -> Any:
        """The JSON value on the child's last line of output."""
        lines = self.stdout.strip().splitlines()
        if self.returncode != 0 or not lines:
            raise RuntimeError(f"child process exited with {self.returncode}:\n"
                               f"{self.stderr[-4000:]}")
        return json.loads(lines[-1])


# The child runs under this launcher, which reports the kernel's high-water mark of the child and
# of its waited-for descendants (RUSAGE_CHILDREN). Not wait4() on a child spawned from here: a
# process keeps the largest RSS it ever had across exec(), and a child forked from pytest starts
# life as a copy of pytest (GBs after the benchmarks before it), so its ru_maxrss would be ours.
_LAUNCHER = """
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
"""


def run_fresh_process(argv: list[str], env: Mapping[str, str] | None = None,
                      cwd: str | os.PathLike | None = None, interval: float = 0.1) -> ProcessRun:
    """Run `argv` in a new process and wait for it. Its peak RSS is that of its whole tree: the
    most of (a) the summed RSS of the process and all its descendants, sampled every `interval`
    s, and (b) the kernel's high-water mark of the process and of its largest waited-for
    descendant, which no sampling can miss (reported by a small launcher between this process
    and the child: see _LAUNCHER). An end-to-end benchmark runs this way so that its memory is
    its own, not the pytest session's (whose RSS, and whose lifetime maxima, include every
    benchmark before it)."""
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as tmp:
        hwm_file = Path(tmp) / "maxrss"
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(hwm_file), *argv],
                                stdout=out, stderr=err, env=None if env is None else dict(env),
                                cwd=cwd, start_new_session=True)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                peak[0] = max(peak[0], tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:  # wait for the exit without reaping, so the sampler never reads a reused pid
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            stop.set()
            sampler.join()
            proc.wait()
        try:
            hwm = int(hwm_file.read_text()) * 1024  # ru_maxrss is in KiB on Linux
        except (OSError, ValueError):
            hwm = 0
        out.seek(0)
        err.seek(0)
        return ProcessRun(proc.returncode, out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"), max(peak[0], hwm))
