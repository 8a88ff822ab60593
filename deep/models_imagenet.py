"""ImageNet-style networks (ResNet, DenseNet, VGG) in plain PyTorch.

They follow torchvision's layer layout and parameter names (bar the classifier, which is
always `head`), so torchvision's ImageNet checkpoints load into them; we do not import
torchvision itself. Adaptive pooling makes them accept any input size >= 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models_base import ClassifierNet, init_weights


class ResNetBasicBlock(nn.Module):
    """torchvision's BasicBlock: conv1/bn1, conv2/bn2, optional `downsample` (1x1 conv + BN)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(ClassifierNet):
    """ResNet-18/34 (7x7 stride-2 stem, max-pool, four BasicBlock stages); `width` is the
    first stage's channel count (64 = torchvision)."""

    def __init__(self, num_classes: int, layers: tuple[int, ...], width: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, n in enumerate(layers):
            cout = width * 2**i
            blocks = [ResNetBasicBlock(cin if b == 0 else cout, cout, 2 if (b == 0 and i) else 1)
                      for b in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.n_stages = len(layers)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck to bn_size*growth) then BN-ReLU-3x3 conv (growth)."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(feats, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """`n` DenseLayers, each fed the concatenation of all earlier outputs."""

    def __init__(self, n: int, cin: int, growth: int, bn_size: int):
        super().__init__()
        for i in range(n):
            self[f"denselayer{i + 1}"] = DenseLayer(cin + i * growth, growth, bn_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


def fastai_head(cin: int, num_classes: int, hidden: int = 512, dropout: float = 0.5) -> nn.Sequential:
    """fastai's create_head: BN -> Dropout(p/2) -> Linear -> ReLU -> BN -> Dropout(p) -> Linear."""
    return nn.Sequential(
        nn.BatchNorm1d(cin), nn.Dropout(dropout / 2), nn.Linear(cin, hidden),
        nn.ReLU(inplace=True), nn.BatchNorm1d(hidden), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class DenseNet(ClassifierNet):
    """DenseNet-BC (torchvision layout). `head="fastai"` pools concat(avg, max) and uses
    fastai's two-layer head (the retinopathy study); `head="linear"` is avg-pool + Linear."""

    def __init__(self, num_classes: int, block_config: tuple[int, ...], growth: int = 32,
                 init_features: int = 64, bn_size: int = 4, head: str = "fastai",
                 head_hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        feats = nn.Sequential()
        feats.add_module("conv0", nn.Conv2d(3, init_features, 7, 2, 3, bias=False))
        feats.add_module("norm0", nn.BatchNorm2d(init_features))
        feats.add_module("relu0", nn.ReLU(inplace=True))
        feats.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = init_features
        for i, n in enumerate(block_config):
            feats.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(block_config) - 1:
                feats.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        feats.add_module("norm5", nn.BatchNorm2d(c))
        self.features = feats
        self.concat_pool = head == "fastai"
        self.num_features = 2 * c if self.concat_pool else c
        self.head = (fastai_head(2 * c, num_classes, head_hidden, dropout) if self.concat_pool
                     else nn.Linear(c, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        if self.concat_pool:
            return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1)
        return x.mean(dim=(2, 3))


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


class VGG(ClassifierNet):
    """VGG-16 (torchvision layout): conv stack, 7x7 adaptive avg-pool, FC-FC (`pre_logits`,
    the embedding) and a linear `head`. `width` multiplies the conv widths (1 = standard)."""

    def __init__(self, num_classes: int, batch_norm: bool = False, dropout: float = 0.5,
                 width: float = 1.0, hidden: int = 4096):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = max(4, round(v * width))
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.pre_logits = nn.Sequential(
            nn.Linear(cin * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.num_features = hidden
        self.head = nn.Linear(hidden, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_logits(torch.flatten(self.avgpool(self.features(x)), 1))
