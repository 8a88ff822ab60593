"""CIFAR-style networks (3x3 stem, no early down-sampling), written in plain PyTorch.

All of them end in adaptive pooling, so they accept any input size >= 32; on 32x32 input
the adaptive pool is exactly the fixed pooling the studies used (8x8 or 4x4 average).
"""

from __future__ import annotations

import torch
from torch import nn

from .models_base import ClassifierNet, conv_bn, init_weights


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from a global-average MLP."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1)
        self.shortcut = (
            conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(ClassifierNet):
    """ResNet with a 3x3 stride-`stem_stride` stem, BasicBlock stages, global average pool.

    `stem_se_reduction` adds one Squeeze-and-Excitation gate after the stem (the resnet-se
    study variant; see `cvbench.deep.models` for how its parameter count pins this down).
    """

    def __init__(
        self,
        num_classes: int,
        blocks: tuple[int, ...],
        widths: tuple[int, ...],
        stem_width: int,
        stem_stride: int = 1,
        stem_se_reduction: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            conv_bn(3, stem_width, 3, stem_stride), nn.ReLU(inplace=True)
        )
        self.stem_se = (
            SqueezeExcite(stem_width, stem_se_reduction) if stem_se_reduction else nn.Identity()
        )
        stages, cin = [], stem_width
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = [BasicBlock(cin if b == 0 else w, w, 2 if (b == 0 and i > 0) else 1)
                      for b in range(n)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem_se(self.stem(x)))
        return x.mean(dim=(2, 3))


class Inception(nn.Module):
    """GoogLeNet Inception module: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | maxpool-1x1, concatenated."""

    def __init__(self, cin: int, n1: int, n3r: int, n3: int, n5r: int, n5: int, npool: int,
                 bias: bool = False):
        super().__init__()

        def cbr(a: int, b: int, k: int) -> list[nn.Module]:
            return [*conv_bn(a, b, k, bias=bias), nn.ReLU(inplace=True)]

        self.b1 = nn.Sequential(*cbr(cin, n1, 1))
        self.b2 = nn.Sequential(*cbr(cin, n3r, 1), *cbr(n3r, n3, 3))
        self.b3 = nn.Sequential(*cbr(cin, n5r, 1), *cbr(n5r, n5, 3), *cbr(n5, n5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *cbr(cin, npool, 1))
        self.out_channels = n1 + n3 + n5 + npool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


# (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj) of GoogLeNet's nine Inception modules;
# "M" marks a 3x3 stride-2 max-pool.
GOOGLENET_CFG: tuple = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)


class GoogLeNetCifar(ClassifierNet):
    """GoogLeNet for 32x32 input: a 3x3 conv (with bias) to 192 channels, nine Inception
    modules, two stride-2 max-pools, global average pool, linear head.

    `conv_bias=False` (the default, the study's myNet) drops the biases of the Inception
    convs, which BatchNorm makes redundant; `conv_bias=True` keeps them.
    """

    def __init__(self, num_classes: int, conv_bias: bool = False, width: float = 1.0):
        super().__init__()
        self.num_classes = num_classes

        def scale(c: int) -> int:
            return max(1, round(c * width))

        stem = scale(192)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1, bias=True), nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = stem
        for cfg in GOOGLENET_CFG:
            if cfg == "M":
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                continue
            block = Inception(cin, *(scale(c) for c in cfg), bias=conv_bias)
            layers.append(block)
            cin = block.out_channels
        self.blocks = nn.Sequential(*layers)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class FastNet(ClassifierNet):
    """Small fast CIFAR net in the spirit of airbench: a conv-BN-GELU stem, then three
    blocks of (conv, max-pool 2, BN, GELU, conv, BN, GELU) with widths 64/256/256 scaled by
    `width`, a global max-pool and a linear head; about 2 M parameters at width 1.
    """

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        w = [max(8, round(c * width)) for c in (32, 64, 256, 256)]
        self.stem = nn.Sequential(*conv_bn(3, w[0], 3), nn.GELU())
        blocks: list[nn.Module] = []
        for cin, cout in zip(w[:-1], w[1:]):
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                nn.BatchNorm2d(cout), nn.GELU(),
                *conv_bn(cout, cout, 3), nn.GELU(),
            ))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = w[-1]
        self.head = nn.Linear(w[-1], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).amax(dim=(2, 3))
