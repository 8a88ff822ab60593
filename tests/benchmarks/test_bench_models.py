"""CPU training-step throughput (forward + backward, images/s) of the CIFAR-sized models.

Run with `make bench` (or `pytest tests/benchmarks/test_bench_models.py --benchmark-enable`);
each benchmark stores `images_per_s` in its extra_info. Batch-128 cases are `slow`; the fast
pass (`make test`) runs only the small-batch smoke cases.
"""

from __future__ import annotations

import pytest
import torch

from cvbench.deep.models import create_model

CIFAR_MODELS = ["resnet-se", "resnet18-cifar", "mynet", "fastnet", "resnet-small"]


def train_step_bench(benchmark, name: str, batch: int, size: int = 32, **kwargs) -> None:
    """Benchmark one SGD-free training step (zero grads, forward, loss, backward)."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, model.num_classes, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        return float(loss.detach())

    loss = benchmark(step)
    assert loss == loss and loss > 0  # finite, positive cross-entropy
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.mean:
        benchmark.extra_info["images_per_s"] = round(batch / stats.stats.mean, 1)
    benchmark.extra_info.update(model=name, batch=batch, size=size,
                                threads=torch.get_num_threads())


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_train_step_batch128(benchmark, name):
    train_step_bench(benchmark, name, batch=128)


@pytest.mark.parametrize("name", ["fastnet", "resnet-small"])
def test_train_step_smoke(benchmark, name):
    train_step_bench(benchmark, name, batch=8, width=0.25)
