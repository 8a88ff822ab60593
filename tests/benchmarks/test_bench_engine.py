"""Speed of the deep data path and of the trainer's step against a bare PyTorch loop.

Throughputs and the engine/bare ratio go to benchmark.extra_info (see the JSON from
`make bench`); nothing here asserts on time. The small cases run in `make test`'s fast pass;
the CIFAR-sized ones are marked slow.
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
    t0 = time.perf_counter()
    for s in range(steps):
        idx = torch.arange(s * batch, (s + 1) * batch)
        x = x_all[idx].permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _engine_run(model, x_np, y_np, batch: int) -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.05, device="cpu", progress=False,
                      schedule="constant", amp=False, channels_last=False)
    trainer = Trainer(model, cfg, hooks=TrainHooks())
    t0 = time.perf_counter()
    trainer.fit(TrainData(x_np, torch.as_tensor(y_np), y_np))
    return time.perf_counter() - t0


def _compare(benchmark, build, n_steps: int, batch: int, size: int, rounds: int) -> None:
    x_np = _images(n_steps * batch, size)
    y_np = np.arange(len(x_np)) % 10
    x_t, y_t = torch.from_numpy(x_np), torch.as_tensor(y_np)
    _bare_loop(build(), x_t, y_t, batch, 1)  # warm-up (allocator, kernels)
    _engine_run(build(), x_np[:batch], y_np[:batch], batch)
    bare, engine = [], []
    for _ in range(rounds):  # interleaved, best of `rounds`, so load changes hit both alike
        bare.append(_bare_loop(build(), x_t, y_t, batch, n_steps))
        engine.append(_engine_run(build(), x_np, y_np, batch))
    benchmark.pedantic(_engine_run, args=(build(), x_np, y_np, batch), rounds=1, iterations=1)
    benchmark.extra_info.update({
        "steps": n_steps, "batch": batch, "image_size": size,
        "bare_step_ms": round(1000 * min(bare) / n_steps, 2),
        "engine_step_ms": round(1000 * min(engine) / n_steps, 2),
        "engine_over_bare": round(min(engine) / min(bare), 3),  # target: <= 1.10
    })


def test_bench_engine_step_vs_bare_small(benchmark):
    """Small conv net, batch 64 at 16x16: the engine's per-step overhead is visible here."""
    _compare(benchmark, _small_net, n_steps=8, batch=64, size=16, rounds=2)


@pytest.mark.slow
def test_bench_engine_step_vs_bare_fastnet(benchmark):
    """FastNet (half width), batch 128 at 32x32: the CIFAR case the target refers to."""
    from cvbench.deep.models import create_model

    def build():
        torch.manual_seed(0)
        return create_model("fastnet", num_classes=10, width=0.5)

    _compare(benchmark, build, n_steps=6, batch=128, size=32, rounds=2)
