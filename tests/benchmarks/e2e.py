"""The end-to-end workloads of `make bench`, each run in a fresh process (guard.run_fresh_process)
so that the peak RSS of its process tree is its own:

    python -m tests.benchmarks.e2e bow-scene15 DATA STEP BACKEND
    python -m tests.benchmarks.e2e fisher-scene15 DATA
    python -m tests.benchmarks.e2e fastnet-cifar10 DATA

(from the project root; CVBENCH_CACHE names the cache, empty for a cold run). The last line
printed is a JSON object of what the benchmark records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run(name: str, *args, cache: Path, threads: int | None = None):
    """Workload `name` in a fresh interpreter with CVBENCH_CACHE=cache (and BLAS/OpenMP pools
    of `threads` threads when given): a guard.ProcessRun, peak RSS of its tree included."""
    from tests.benchmarks.guard import run_fresh_process

    env = {**os.environ, "CVBENCH_CACHE": str(cache)}
    if threads:
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    return run_fresh_process([sys.executable, "-m", "tests.benchmarks.e2e", name,
                              *map(str, args)], env=env, cwd=ROOT)


def bow_scene15(data: str, step: str, backend: str) -> dict:
    """Bag of SIFT k-NN on all of scene15 (extract, vocabulary, encode, classify), 2 jobs."""
    from cvbench.baselines.bow import BowSift
    from cvbench.tasks.scene15.reader import read

    train, test = read(Path(data) / "scene15")
    t0 = time.perf_counter()
    m = BowSift(step=int(step), backend=backend, vocab_size=400, hist_norm="sqrt", metric="l1",
                k=8, n_jobs=2).fit(train)
    accuracy = float((m.predict(test) == test.labels).mean())
    return {"pipeline_s": round(time.perf_counter() - t0, 2), "accuracy": accuracy,
            "backend": m.info_["backend"], "timings": m.info_["timings"],
            "train_images": len(train), "test_images": len(test)}


def fisher_scene15(data: str) -> dict:
    """suites/scene15.toml's Fisher-vector block on all of scene15 (extract, PCA + GMM, encode,
    linear SVM), 2 jobs, backend "auto"."""
    from cvbench.baselines.fisher import FisherSift
    from cvbench.tasks.scene15.reader import read

    train, test = read(Path(data) / "scene15")
    t0 = time.perf_counter()
    m = FisherSift(step=4, bin_size=4, rootsift=True, pca_dim=64, n_components=64,
                   vocab_sample=100_000, pyramid_levels=1, C=1.0, n_jobs=2).fit(train)
    accuracy = float((m.predict(test) == test.labels).mean())
    return {"pipeline_s": round(time.perf_counter() - t0, 2), "accuracy": accuracy,
            "backend": m.info_["backend"], "timings": m.info_["timings"],
            "train_images": len(train), "test_images": len(test)}


def fastnet_cifar10(data: str) -> dict:
    """One epoch of the `fastnet` method (half width, batch 128, flip-crop) on the cifar10
    train split, then predicting its test split; one torch thread."""
    import torch

    from cvbench.methods import create_method
    from cvbench.tasks.cifar10.reader import read

    train, test = read(Path(data) / "cifar10")
    t0 = time.perf_counter()
    m = create_method("fastnet", epochs=1, warmup_epochs=0.2, val_fraction=0.0, device="cpu",
                      seed=0, n_jobs=1).fit(train)
    scores = m.predict_scores(test)
    accuracy = float((scores.argmax(1) == test.labels).mean())
    return {"epoch_and_predict_s": round(time.perf_counter() - t0, 2), "accuracy": accuracy,
            "scores_shape": list(scores.shape), "threads": torch.get_num_threads(),
            "train_images": len(train), "test_images": len(test)}


WORKLOADS = {"bow-scene15": bow_scene15, "fisher-scene15": fisher_scene15,
             "fastnet-cifar10": fastnet_cifar10}


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    print(json.dumps(WORKLOADS[name](*args)), flush=True)
