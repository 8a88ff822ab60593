"""Shared pieces of the model zoo: the classifier base class and small conv helpers.

Every model in `cvbench.deep.models` is a `ClassifierNet`: `forward_features(x)` returns the
pooled embedding (N, num_features), `head` maps it to logits, so retrieval can use embeddings.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassifierNet(nn.Module):
    """Base class: logits = head(forward_features(x)); records num_classes and num_features."""

    num_classes: int
    num_features: int
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Pooled embedding of shape (N, num_features)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False
) -> nn.Sequential:
    """Conv (same padding) then BatchNorm; the ReLU/GELU is left to the caller."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias),
        nn.BatchNorm2d(cout),
    )


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs, unit BatchNorm, zero biases: the usual ResNet initialisation.

    Skipped on the meta device (shapes only), where torch's random init is needlessly slow."""
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
