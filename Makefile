# cvbench: `make demo` and `make test` are the two commands a newcomer needs.
# Each creates/updates .venv first (re-installing only when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv venv-unlocked lock gpu-pack gpu-rehearsal demo test bench bench-baseline bench-scale lint leaderboard vlfeat clean

venv: $(STAMP)

# Installs the tested versions of every package from requirements.lock (pinned, with hashes),
# then the project itself. `make venv-unlocked` resolves from pyproject.toml instead, and
# `make lock` rewrites the lock from that environment (see scripts/lock.py).
# LOCK_INDEXES: the indexes the lock's `# index:` lines name, for the pins PyPI does not serve
# (torch's +cpu build). pip gets them only when the first try finds no file for a pin, so a
# machine that keeps that wheel on disk (find-links) installs offline; tests/test_lock.py checks
# that every such pin has its index and that this recipe passes it.
LOCK_INDEXES := https://download.pytorch.org/whl/cpu
$(STAMP): pyproject.toml constraints.txt requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@$(PIP) install -q --require-hashes --no-deps -r requirements.lock 2>$(VENV)/lock-first-try.log || \
	  (echo "cvbench: not every pinned file is on this machine's indexes; adding $(LOCK_INDEXES)" && \
	   $(PIP) install -q --require-hashes --no-deps $(addprefix --extra-index-url ,$(LOCK_INDEXES)) \
	     -r requirements.lock)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(MAKE) --no-print-directory vlfeat || echo "cvbench: cyvlfeat not installed; dense SIFT uses the numpy re-implementation of VLFeat's dsift"
	@touch $(STAMP)

# Optional: VLFeat's dense SIFT. Needs Debian's libvlfeat-dev (installed when we are root and apt
# works); the Python binding is built against the numpy already in the venv.
vlfeat:
	@if ! test -e /usr/include/vl/generic.h; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq libvlfeat-dev >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libvlfeat-dev >/dev/null 2>&1)); \
	  fi; \
	fi
	@test -e /usr/include/vl/generic.h
	$(PIP) install -q cython setuptools wheel
	$(PIP) install -q --no-build-isolation -c constraints.txt "cyvlfeat>=0.7"
	$(PY) -c "import cyvlfeat.sift; print('cvbench: cyvlfeat available (vlfeat dense SIFT backend)')"

# The demo runs for real on every call, into a scratch leaderboard, so the committed pages stay
# as they are (DEMO_LEADERBOARD=leaderboard make demo writes into the committed one).
DEMO_LEADERBOARD ?= .cache/demo-leaderboard
venv-unlocked:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt -e ".[dev,faiss,pretrained,dask,infer]"

lock:
	$(PY) scripts/lock.py

demo: venv
	rm -rf $(DEMO_LEADERBOARD)
	$(VENV)/bin/cvbench suite demo --leaderboard $(DEMO_LEADERBOARD) --show --no-progress

# The unit tests and every non-slow benchmark once, unguarded (pytest-benchmark runs each
# benchmarked function once under xdist), in parallel: every test is hermetic. TEST_JOBS=0 runs
# them in one process. Guarded benchmark runs: pytest --benchmark, make bench.
TEST_JOBS ?= auto
test: venv
	$(VENV)/bin/ruff check cvbench baselines deep tests
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) tests tests/benchmarks

# Every benchmark, the slow end-to-end ones included, guarded against this machine's entry in
# tests/benchmarks/baseline.json, or, on a machine without one, against the baseline revision
# measured beside them (`pytest --benchmark` is the same without the slow ones). BENCH_ARGS
# passes more pytest options, e.g. BENCH_ARGS="--benchmark-against main" or
# BENCH_ARGS="--benchmark-json=bench.json".
BENCH_ARGS ?=
bench: venv
	$(PY) -m pytest -p no:cacheprovider --benchmark --benchmark-all $(BENCH_ARGS)

# Refresh this machine's entry (and the baseline revision): on committed code, after an intended
# speed change; refused while the 1-minute load average exceeds the cores.
bench-baseline: venv
	$(PY) -m pytest -p no:cacheprovider --benchmark --benchmark-all --benchmark-update-baseline $(BENCH_ARGS)

# Cost against dataset size: four pipelines at N = 1k, 4k, 16k, 64k synthetic images (generated
# once into the cache) plus 3000x2000 photographs, time and peak RSS of each run's process tree,
# written to docs/scale/ (results.json, cost_vs_n.png). Takes long on 2 cores: the embedding
# extraction alone is ~20 ms an image; SCALE_ARGS="--max-n linear-probe=4000" caps a pipeline.
SCALE_ARGS ?=
bench-scale: venv
	$(PY) scripts/bench_scale.py $(SCALE_ARGS)

# The studies' GPU protocols (every suite's gpu_only block): pack the data that travels to a
# GPU machine, then run there `python3 scripts/gpu_protocols.py run --out OUT` (see that file);
# `make gpu-rehearsal` runs the same command on this CPU with the suites' --quick overrides.
gpu-pack: venv
	$(PY) scripts/gpu_protocols.py pack --data-dir $${CVBENCH_DATA:-../shared/data} --dest .gpu-pack

gpu-rehearsal: venv
	$(PY) scripts/gpu_protocols.py run --device cpu --quick --data-dir $${CVBENCH_DATA:-../shared/data} \
	  --out .cache/gpu-rehearsal --block-limit-s 20

leaderboard: venv
	$(VENV)/bin/cvbench leaderboard

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
