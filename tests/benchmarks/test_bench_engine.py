"""Speed of the deep data path, of the trainer's step against a bare PyTorch loop, and (slow)
one FastNet epoch on cifar10.

The ratio invariant "engine step / bare loop <= 1.10" is asserted under the speed guard
(`pytest --benchmark`, `make bench`: both loops timed interleaved in this process, in CPU
seconds, median of the per-round ratios); `make test`'s fast pass runs each case once and only records it in
benchmark.extra_info. The CIFAR-sized cases are marked slow.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cvbench.deep.augment import AugmentSpec, apply_augment
from cvbench.deep.engine import ImageStore, TrainConfig, TrainData, Trainer, TrainHooks
from tests.benchmarks.guard import paired_ratio, tree_process_time


def _images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _small_net(k: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, k))


def _loader_epoch(store: ImageStore, spec: AugmentSpec, batch: int, gen: torch.Generator) -> int:
    order = torch.randperm(len(store), generator=gen)
    seen = 0
    for start in range(0, len(store), batch):
        x = apply_augment(store.batch(order[start:start + batch]), spec, gen)
        x = x.float().div_(255.0)
        seen += len(x)
    return seen


@pytest.mark.parametrize("n,size", [(2048, 32)])
def test_bench_loader_augment(benchmark, n, size):
    """In-memory uint8 store -> flip + reflect-crop + cutout on the device -> float batches."""
    store = ImageStore(_images(n, size), torch.device("cpu"))
    spec = AugmentSpec(flip=True, pad=4, cutout=8)
    gen = torch.Generator().manual_seed(0)
    seen = benchmark(_loader_epoch, store, spec, 256, gen)
    assert seen == n
    if benchmark.stats:
        benchmark.extra_info["images_per_s"] = round(n / benchmark.stats.stats.mean, 1)


def _bare_loop(model, x_all, y_all, batch: int, steps: int, lr: float = 0.05) -> float:
    """The hand-written loop the engine is compared with: same model, batch, optimizer, loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    t0 = time.process_time()
    for s in range(steps):
        idx = torch.arange(s * batch, (s + 1) * batch)
        x = x_all[idx].permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.process_time() - t0


def _engine_run(model, x_np, y_np, batch: int) -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.05, device="cpu", progress=False,
                      schedule="constant", amp=False, channels_last=False)
    trainer = Trainer(model, cfg, hooks=TrainHooks())
    t0 = time.process_time()
    trainer.fit(TrainData(x_np, torch.as_tensor(y_np), y_np))
    return time.process_time() - t0


def _compare(benchmark, speed_guard, build, n_steps: int, batch: int, size: int, rounds: int) -> None:
    x_np = _images(n_steps * batch, size)
    y_np = np.arange(len(x_np)) % 10
    x_t, y_t = torch.from_numpy(x_np), torch.as_tensor(y_np)
    _bare_loop(build(), x_t, y_t, batch, 1)  # warm-up (allocator, kernels)
    _engine_run(build(), x_np[:batch], y_np[:batch], batch)
    bare, engine = [], []
    for r in range(rounds):  # interleaved (ABBA), so load changes hit both alike
        pair = [lambda: bare.append(_bare_loop(build(), x_t, y_t, batch, n_steps)),
                lambda: engine.append(_engine_run(build(), x_np, y_np, batch))]
        for run in pair if r % 2 == 0 else pair[::-1]:
            run()
    benchmark.pedantic(_engine_run, args=(build(), x_np, y_np, batch),
                       rounds=speed_guard.rounds(3), iterations=1)
    ratio = paired_ratio(engine, bare)
    benchmark.extra_info.update({
        "steps": n_steps, "batch": batch, "image_size": size, "rounds": rounds,
        "bare_step_ms": round(1000 * float(np.median(bare)) / n_steps, 2),
        "engine_step_ms": round(1000 * float(np.median(engine)) / n_steps, 2),
        "engine_over_bare": round(ratio, 3),
    })
    speed_guard.at_most("engine step / bare PyTorch loop", ratio, 1.10,
                        f"engine {1000 * np.median(engine) / n_steps:.1f} ms/step, bare "
                        f"{1000 * np.median(bare) / n_steps:.1f} ms/step, {rounds} rounds")


def test_bench_engine_step_vs_bare_small(benchmark, speed_guard):
    """Small conv net, batch 64 at 16x16: the engine's per-step overhead is visible here."""
    _compare(benchmark, speed_guard, _small_net, n_steps=8, batch=64, size=16,
             rounds=speed_guard.rounds(10))


@pytest.mark.slow
def test_bench_engine_step_vs_bare_fastnet(benchmark, speed_guard):
    """FastNet (half width), batch 128 at 32x32: the CIFAR case the target refers to."""
    from cvbench.deep.models import create_model

    def build():
        torch.manual_seed(0)
        return create_model("fastnet", num_classes=10, width=0.5)

    _compare(benchmark, speed_guard, build, n_steps=6, batch=128, size=32,
             rounds=speed_guard.rounds(4, fast=2))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.benchmark(timer=tree_process_time)  # CPU seconds of the child process
def test_bench_fastnet_epoch_cifar10(benchmark, speed_guard, real_data, tmp_path):
    """One epoch of the `fastnet` method (half width, batch 128, flip-crop) on the cifar10 train
    split here, then predicting its test split, in a fresh process (start-up and imports
    included) with one thread. Peak RSS of its process tree < 2 GiB."""
    from tests.benchmarks import e2e
    from tests.conftest import task_data

    data = task_data(real_data, "cifar10").parent
    proc = benchmark.pedantic(e2e.run, args=("fastnet-cifar10", data),
                              kwargs={"cache": tmp_path / "cache", "threads": 1},
                              rounds=1, iterations=1)
    out = proc.result()
    benchmark.extra_info.update(peak_tree_rss_mib=round(proc.peak_mib, 1), **out)
    assert out["scores_shape"] == [out["test_images"], 10] and out["accuracy"] > 0.15
    speed_guard.at_most("peak RSS of the process tree, MiB", proc.peak_mib, 2048)
    assert proc.peak_mib < 2048, f"peak RSS of the process tree {proc.peak_mib:.0f} MiB, expected < 2 GiB"
