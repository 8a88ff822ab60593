"""Model registry: one `create_model(name, ...)` for every network the deep methods train.

Each model is a `ClassifierNet`: `model.forward_features(x)` gives the pooled embedding
(N, model.num_features), `model.head` maps it to logits, `model.num_classes` says how many.
The study architectures reproduce the source studies' parameter counts exactly
(`model_info(name)["study_params"]`, asserted in tests/test_models.py):

- `resnet-se` (4,697,742): CIFAR ResNet, BasicBlocks [4, 4, 3] at widths 64/128/256,
  1x1 conv + BN shortcuts, one Squeeze-and-Excitation gate (reduction 16, with biases) after
  the 64-channel stem. Enumerating variants (conv biases, shortcut BN, SE in every block / per
  stage / after the stem, reductions 1-256, SE biases) hits the study count only with this
  one, so the count fixes the SE gate's size but not where it sits; we put it after the stem.
- `resnet18-cifar` (11,173,962): the common CIFAR ResNet-18 (3x3 stem, no max-pool).
- `mynet` (6,158,538): CIFAR GoogLeNet (3x3 conv to 192, nine Inception modules) whose
  Inception convs have no bias (BatchNorm follows); with biases it is 6,166,250 = 6,158,538
  + 7,712, the sum of the Inception conv output channels.
- `resnet34` (21,293,906): torchvision's ResNet-34 with a 512 -> 18 head (7 race + 2 gender
  + 9 age outputs).
- `densenet201` (20,070,789; 2,206,917 trainable after `freeze_body`): DenseNet-201 with
  fastai's head (concat avg/max pool -> BN(3840) -> dropout -> Linear(3840, 512) -> ReLU ->
  BN(512) -> dropout -> Linear(512, 5)); the trainable count is the head plus the body's
  BatchNorm weights and biases (running statistics are buffers, not parameters).
- `vgg16` (147,026,796): torchvision's VGG-16 (no BN) with FC 4096-4096-3116.

ImageNet weights are optional: `pretrained="/path/weights.pth"` loads a local state dict
(torchvision's or ours), `pretrained="imagenet"` fetches torchvision's published weights
through torch.hub's cache and fails with a UserError when offline.
"""

from __future__ import annotations

import inspect
import numbers
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvbench.errors import UserError

from .models_base import ClassifierNet
from .models_cifar import CifarResNet, FastNet, GoogLeNetCifar
from .models_imagenet import VGG, DenseNet, ResNet

__all__ = [
    "MODELS", "ModelSpec", "ClassifierNet", "create_model", "list_models", "model_info",
    "count_parameters", "freeze_body", "unfreeze", "load_pretrained",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder and the facts `model_info` reports."""

    name: str
    builder: Callable[..., ClassifierNet]
    num_classes: int
    input_size: tuple[int, int, int]
    description: str
    study_params: int | None = None
    study_trainable: int | None = None  # after freeze_body(model), where the study froze
    imagenet_url: str | None = None  # torchvision's published ImageNet-1k weights
    key_map: tuple[tuple[str, str], ...] = field(default=())  # torchvision prefix -> ours

    def __call__(self, num_classes: int | None = None, **kwargs: Any) -> ClassifierNet:
        return create_model(self.name, num_classes=num_classes, **kwargs)

    def kwargs(self) -> dict[str, Any]:
        """The builder's keyword parameters (other than num_classes) and their defaults."""
        sig = inspect.signature(self.builder)
        return {k: p.default for k, p in sig.parameters.items() if k != "num_classes"}


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, num_classes: int, input_size: tuple[int, int, int],
                   description: str, **facts: Any) -> Callable:
    """Decorator registering a builder `fn(num_classes, **kwargs) -> ClassifierNet`."""

    def wrap(fn: Callable[..., ClassifierNet]) -> Callable[..., ClassifierNet]:
        MODELS[name] = ModelSpec(name, fn, num_classes, input_size, description, **facts)
        return fn

    return wrap


_TV = "https://download.pytorch.org/models/"
_BN_URLS = {_TV + "vgg16-397923af.pth": _TV + "vgg16_bn-6c64b313.pth"}
_RESNET_KEYS = (("fc.", "head."),)
_VGG_KEYS = (("classifier.0.", "pre_logits.0."), ("classifier.3.", "pre_logits.3."),
             ("classifier.6.", "head."))


# ---- CIFAR-sized (32x32) --------------------------------------------------------------------

@register_model("resnet-se", 10, (3, 32, 32), study_params=4_697_742, description=(
    "CIFAR ResNet, BasicBlocks [4,4,3] at 64/128/256, SE gate after the stem (cifar10 study A)"))
def resnet_se(num_classes: int, width: float = 1.0, se_reduction: int = 16) -> ClassifierNet:
    w = _scaled(64, width)
    return CifarResNet(num_classes, (4, 4, 3), (w, 2 * w, 4 * w), w, stem_se_reduction=se_reduction)


@register_model("resnet18-cifar", 10, (3, 32, 32), study_params=11_173_962, description=(
    "CIFAR ResNet-18: 3x3 stem, no max-pool, 64-512 wide (cifar10 study B)"))
def resnet18_cifar(num_classes: int, width: float = 1.0) -> ClassifierNet:
    w = _scaled(64, width)
    return CifarResNet(num_classes, (2, 2, 2, 2), (w, 2 * w, 4 * w, 8 * w), w)


@register_model("mynet", 10, (3, 32, 32), study_params=6_158_538, description=(
    "myNet: GoogLeNet for 32x32 input, Inception convs without bias (cifar10 study B)"))
def mynet(num_classes: int, conv_bias: bool = False, width: float = 1.0) -> ClassifierNet:
    return GoogLeNetCifar(num_classes, conv_bias=conv_bias, width=width)


@register_model("fastnet", 10, (3, 32, 32), description=(
    "small fast airbench-style CIFAR net (conv-BN-GELU, widths 64/256/256), ~2 M params"))
def fastnet(num_classes: int, width: float = 1.0) -> ClassifierNet:
    return FastNet(num_classes, width=width)


@register_model("resnet-small", 10, (3, 32, 32), description=(
    "CPU-sized ResNet: BasicBlocks [2,2,2] at 32/64/128 x width; stem_stride 2 for big inputs"))
def resnet_small(num_classes: int, width: float = 1.0, stem_stride: int = 1) -> ClassifierNet:
    w = _scaled(32, width)
    return CifarResNet(num_classes, (2, 2, 2), (w, 2 * w, 4 * w), w, stem_stride=stem_stride)


# ---- ImageNet-style (224x224) ---------------------------------------------------------------

@register_model("resnet18", 1000, (3, 224, 224), imagenet_url=_TV + "resnet18-f37072fd.pth",
                key_map=_RESNET_KEYS, description="torchvision-layout ResNet-18, any num_classes")
def resnet18(num_classes: int, width: float = 1.0) -> ClassifierNet:
    return ResNet(num_classes, (2, 2, 2, 2), width=_scaled(64, width))


@register_model("resnet34", 18, (3, 224, 224), study_params=21_293_906,
                imagenet_url=_TV + "resnet34-b627a593.pth", key_map=_RESNET_KEYS, description=(
                    "torchvision-layout ResNet-34, 18 outputs = 7 race + 2 gender + 9 age "
                    "(fairface study)"))
def resnet34(num_classes: int, width: float = 1.0) -> ClassifierNet:
    return ResNet(num_classes, (3, 4, 6, 3), width=_scaled(64, width))


@register_model("densenet121", 5, (3, 224, 224), imagenet_url=_TV + "densenet121-a639ec97.pth",
                key_map=(("classifier.", "head."),), description=(
                    "DenseNet-121 with the fastai head (head='linear' for a plain one)"))
def densenet121(num_classes: int, head: str = "fastai", head_hidden: int = 512,
                dropout: float = 0.5) -> ClassifierNet:
    return DenseNet(num_classes, (6, 12, 24, 16), head=_check_head(head),
                    head_hidden=head_hidden, dropout=dropout)


@register_model("densenet201", 5, (3, 224, 224), study_params=20_070_789,
                study_trainable=2_206_917, imagenet_url=_TV + "densenet201-c1103571.pth",
                key_map=(("classifier.", "head."),), description=(
                    "DenseNet-201 with fastai's concat-pool head to 5 grades (retinopathy study)"))
def densenet201(num_classes: int, head: str = "fastai", head_hidden: int = 512,
                dropout: float = 0.5) -> ClassifierNet:
    return DenseNet(num_classes, (6, 12, 48, 32), head=_check_head(head),
                    head_hidden=head_hidden, dropout=dropout)


@register_model("vgg16", 3116, (3, 224, 224), study_params=147_026_796,
                imagenet_url=_TV + "vgg16-397923af.pth", key_map=_VGG_KEYS, description=(
                    "torchvision-layout VGG-16, FC 4096-4096-classes (hotelid study: 3116)"))
def vgg16(num_classes: int, batch_norm: bool = False, dropout: float = 0.5, width: float = 1.0,
          hidden: int = 4096) -> ClassifierNet:
    return VGG(num_classes, batch_norm=batch_norm, dropout=dropout, width=width, hidden=hidden)


def _scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, at least 4."""
    return max(4, round(channels * width))


def _check_head(head: str) -> str:
    if head not in ("fastai", "linear"):
        raise UserError(f"unknown DenseNet head {head!r}; expected 'fastai' or 'linear'")
    return head


# ---- API ------------------------------------------------------------------------------------

def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return MODELS[name]


def model_info(name: str) -> dict[str, Any]:
    """Facts about a registered model: defaults, input size, the study's parameter count."""
    spec = _spec(name)
    return {
        "name": spec.name, "num_classes": spec.num_classes, "input_size": spec.input_size,
        "study_params": spec.study_params, "study_trainable": spec.study_trainable,
        "description": spec.description, "kwargs": spec.kwargs(),
        "pretrained": "imagenet" if spec.imagenet_url else None,
    }


def create_model(name: str, num_classes: int | None = None, pretrained: str | None = None,
                 **kwargs: Any) -> ClassifierNet:
    """Build model `name` (defaults: the study's class count); `pretrained` is a local
    state-dict path or "imagenet" (torchvision's weights, downloaded only when online)."""
    spec = _spec(name)
    valid = spec.kwargs()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for model {name!r}; "
                        f"valid: num_classes, pretrained, {', '.join(valid) or '(none)'}")
    kwargs = {k: _check_value(name, k, v, valid[k]) for k, v in kwargs.items()}
    try:  # operator.index accepts numpy integers, rejects floats and strings
        n = spec.num_classes if num_classes is None else operator.index(num_classes)
    except TypeError:
        n = 0
    if isinstance(num_classes, bool) or n < 1:
        raise UserError(f"num_classes must be an integer >= 1 for model {name!r}, "
                        f"got {num_classes!r}")
    model = spec.builder(n, **kwargs)
    model.num_classes = n
    if pretrained:
        load_pretrained(model, name, pretrained)
    return model


def _check_value(model: str, key: str, value: Any, default: Any) -> Any:
    """Type-check one builder parameter against its default (bool/int/float/str); numbers
    must be positive, `dropout` a probability."""
    bad = None
    if isinstance(default, bool):
        bad = None if isinstance(value, bool) else "true or false"
    elif isinstance(default, int | float):
        want_int = isinstance(default, int)
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = ok and (not want_int or float(value).is_integer())
        bad = None if ok else ("an integer" if want_int else "a number")
        if ok:
            value = int(value) if want_int else float(value)
            if key == "dropout" and not 0 <= value < 1:
                bad = "a probability in [0, 1)"
            elif key != "dropout" and value <= 0:
                bad = "a positive number"
    elif isinstance(default, str):
        bad = None if isinstance(value, str) else "a string"
    if bad:
        raise UserError(f"parameter {key} of model {model!r} must be {bad}, got {value!r}")
    return value


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared ones once; BN running stats are buffers, not
    counted); works on models built on the meta device."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze_body(model: ClassifierNet, train_bn: bool = True) -> ClassifierNet:
    """Freeze everything but `model.head` (and the body's BatchNorm affine parameters when
    `train_bn`, as fastai does for transfer learning)."""
    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in head
    if train_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad = True
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable again."""
    for p in model.parameters():
        p.requires_grad = True
    return model


# ---- pretrained weights ---------------------------------------------------------------------

# torchvision's old DenseNet checkpoints name "norm.1" what the layer calls "norm1".
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def imagenet_weights_path(name: str, batch_norm: bool = False) -> Path:
    """`name`'s ImageNet checkpoint (torchvision's file name) in $CVBENCH_WEIGHTS or torch.hub's
    checkpoint folder. Nothing is downloaded at run time: a missing file is one UserError
    naming it. `batch_norm` picks torchvision's vgg16_bn weights for `vgg16(batch_norm=True)`."""
    spec = _spec(name)
    url = spec.imagenet_url
    if url and batch_norm:
        url = _BN_URLS.get(url)
    if not url:
        raise UserError(f"model {name!r}{' with batch_norm' if batch_norm else ''} has no "
                        "ImageNet weights; pass pretrained=None or a local state-dict path")
    filename = os.path.basename(url)
    places = [Path(p) / filename for p in os.environ.get("CVBENCH_WEIGHTS", "").split(os.pathsep) if p]
    places.append(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    for path in places:
        if path.is_file():
            return path
    raise UserError(
        f"ImageNet weights for {name!r} are not on this machine: expected {filename} (from {url}) "
        f"in $CVBENCH_WEIGHTS or {places[-1].parent}; cvbench never downloads weights at run "
        "time: copy the file there, or pass pretrained='/path/to/weights.pth'")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"pretrained weights file {path} does not exist; expected a PyTorch "
                        "state dict (.pth) or pretrained='imagenet'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor objects
        raise UserError(f"cannot read pretrained weights {path}: expected a PyTorch state "
                        f"dict saved with torch.save ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"pretrained weights {path} are not a state dict of tensors")
    return obj


def load_pretrained(model: ClassifierNet, name: str, pretrained: str | os.PathLike) -> None:
    """Load a torchvision or cvbench state dict into `model`; head tensors whose shape differs
    (another class count) are left at their fresh initialisation, anything else must match."""
    spec = _spec(name)
    if str(pretrained) == "imagenet":
        has_bn = name.startswith("vgg") and any(
            isinstance(m, nn.BatchNorm2d) for m in model.modules())
        path = imagenet_weights_path(name, batch_norm=has_bn)
    else:
        path = Path(pretrained)
    state = {}
    for key, value in _read_state_dict(path).items():
        key = _DENSENET_OLD_KEY.sub(r"\1\2", key)
        for old, new in spec.key_map:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        state[key] = value
    own = model.state_dict()
    head_keys = {f"head.{k}" for k in model.head.state_dict()}
    unexpected = [k for k in state if k not in own and not k.startswith("head.")]
    wrong = [k for k in state if k in own and k not in head_keys and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and k not in head_keys
               and not k.endswith("num_batches_tracked")]  # absent from old checkpoints
    if unexpected or wrong or missing:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("unexpected", unexpected), ("wrong shape", wrong),
                                     ("missing", missing)) if keys]
        raise UserError(f"pretrained weights {path} do not fit model {name!r} "
                        f"({'; '.join(parts)})")
    keep = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(keep, strict=False)
