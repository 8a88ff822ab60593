"""`finetune`: a registered pretrained backbone (deep/backbones.py) with a new linear head,
trained end to end, or in part, by the shared engine (deep/engine.py).

The network is `models.create_model(backbone, n_outputs, pretrained=True, weights=...)`: the
registry entry's verified pretrained body (SHA-256 checked, weights_only) with a fresh `head`. Inputs are normalised
with the backbone's own statistics (normalize="backbone": (x - 127) / 128 for EfficientNet-
Lite, ImageNet's mean / std for the torchvision-layout nets). `mode` says what trains:

- "frozen_bn": only the head and the body's BatchNorm (affine parameters and running
  statistics), the retinopathy study's transfer mode (fastai's freeze);
- "last:N":    the head and the last N body blocks (`body_blocks`: the stem, every MBConv
  block and the 1x1 head convolution of EfficientNet-Lite; the stem and every residual block
  of a ResNet; ...). The blocks before them are frozen entirely: their BatchNorm stays in
  eval mode (running statistics kept) and, as no gradient reaches them, the forward pass
  through them stores no activations. "last:0" trains the head alone;
- "full":      everything.

Learning rates are discriminative: the head trains at `lr`, the body at `lr * body_lr_scale`
(two optimizer param groups whose "lr_scale" the engine applies to its schedule, warm-up
included). AMP and channels_last follow the engine's switches (on by default on CUDA only),
`time_budget_s` stops a CPU run on time (the schedule anneals to the budget), and every run
keeps a checkpoint per epoch (`resume=True` continues it), as every deep run.

objective="ordinal" (retinopathy): a scalar head regressed on the grade (MSE); after
training, QWK thresholds are fitted on the validation carve of train (val_fraction > 0,
grouped by the task's val_group_key, e.g. patients) with `optimise_thresholds`, and test
scores are `threshold_scores` (argmax = the thresholded grade). tta="flip" averages the
outputs of each test image and its mirror image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cvbench.errors import UserError
from cvbench.methods import register_method
from cvbench.params import Choice, Float, Text
from cvbench.split import Split

from .augment import parse_normalize
from .classifier import DeepClassifier
from .models_base import ClassifierNet
from .ordinal import OBJECTIVES, OrdinalObjective

_CONTAINERS = (nn.Sequential, nn.ModuleList)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)

# CPU-sized defaults (a suite sets the task's own); the engine's other defaults apply.
FINETUNE_DEFAULTS = dict(image_size=None, epochs=3, batch_size=32, optimizer="adamw", lr=1e-3,
                         weight_decay=1e-4, schedule="cosine", warmup_epochs=0.5, augment="flip",
                         normalize="backbone", val_fraction=0.1)


def parse_mode(text: str) -> tuple[str, int | None]:
    """'frozen_bn' | 'full' | 'last:N' -> (kind, N)."""
    key = str(text).strip().lower()
    if key in ("frozen_bn", "full"):
        return key, None
    kind, sep, n = key.partition(":")
    if kind == "last" and sep:
        try:
            blocks = int(n)
        except ValueError:
            blocks = -1
        if blocks >= 0:
            return "last", blocks
    raise ValueError(f"expected 'frozen_bn', 'full' or 'last:N' with N >= 0, got {text!r}")


def _torch_backbone(name: str) -> None:
    from .backbones import get_backbone, list_backbones

    if name not in list_backbones():
        raise ValueError(f"unknown backbone {name!r}; backbones: {', '.join(list_backbones())}")
    if get_backbone(name).kind != "torch":
        raise ValueError(f"backbone {name!r} is not a PyTorch network (it can only embed: use "
                         "linear-probe or embedding-knn)")


def _normalize(text: str) -> None:
    if str(text).strip().lower() != "backbone":
        parse_normalize(text)


def body_blocks(net: nn.Module) -> list[list[nn.Module]]:
    """The body of `net` (everything but `head`) as an ordered list of blocks, each a list
    of modules: the net's children with parameters, plain nn.Sequential / nn.ModuleList
    containers opened (recursively), and every normalisation layer joined to the block before
    it (a conv and its BatchNorm are one block). EfficientNet-Lite: [stem, 16 MBConv blocks,
    1x1 head conv]; ResNet: [stem, 8 or 16 BasicBlocks]; DenseNet: [stem, dense blocks and
    transitions]; VGG: [each conv, each hidden fully connected layer]."""
    head = getattr(net, "head", None)
    out: list[list[nn.Module]] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if child is head:
                continue
            if type(child) in _CONTAINERS:
                visit(child)
            elif any(True for _ in child.parameters()):
                if isinstance(child, _NORMS) and out:
                    out[-1].append(child)
                else:
                    out.append([child])

    visit(net)
    return out


class FineTuneNet(ClassifierNet):
    """A backbone whose frozen modules stay in eval mode whenever the net trains (BatchNorm
    running statistics and drop-connect of frozen blocks do not move)."""

    def __init__(self, net: ClassifierNet, frozen: list[nn.Module]):
        super().__init__()
        self.net = net
        self.num_classes = net.num_classes
        self.num_features = net.num_features
        self._frozen = frozen  # a plain list: not registered twice as submodules

    @property
    def head(self) -> nn.Module:  # type: ignore[override]
        return self.net.head

    def train(self, mode: bool = True) -> FineTuneNet:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def apply_mode(net: ClassifierNet, mode: str) -> FineTuneNet:
    """Set requires_grad on `net` for `mode` (see the module doc) and wrap it so that the
    frozen blocks of "last:N" stay in eval mode."""
    kind, n = parse_mode(mode)
    frozen: list[nn.Module] = []
    net.requires_grad_(kind == "full")
    net.head.requires_grad_(True)
    if kind == "frozen_bn":
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(True)
    elif kind == "last":
        blocks = body_blocks(net)
        if n > len(blocks):
            raise UserError(f"mode {mode!r}: the backbone has only {len(blocks)} blocks "
                            f"(last:0 trains the head alone, last:{len(blocks)} the whole body)")
        for block in blocks[len(blocks) - n:]:
            for module in block:
                module.requires_grad_(True)
        frozen = [m for block in blocks[: len(blocks) - n] for m in block]
    return FineTuneNet(net, frozen)


class FineTune(OrdinalObjective, DeepClassifier):
    """A pretrained backbone + new linear head trained with the shared engine (module doc).

    Parameters over the engine's (DeepClassifier's, bar model / width / pretrained):
      backbone:      a registered PyTorch backbone (efficientnet_lite0/1/2, or a
                     torchvision-layout net whose checkpoint `weights` names)
      weights:       a weights file (torchvision-layout nets; $CVBENCH_WEIGHTS otherwise)
      mode:          "frozen_bn" | "last:N" | "full"
      body_lr_scale: the body's lr as a fraction of the head's `lr`
      objective:     "classification" (softmax head) or "ordinal" (scalar head + QWK
                     thresholds fitted on the validation carve)
      tta:           "none" or "flip" (test outputs averaged over the mirror image)
      normalize:     "backbone" (its own statistics; default) or any DeepClassifier value
    image_size None = the backbone's native size (224 for Lite0).
    """

    hidden_params = ("model", "width", "pretrained")
    parameters = {
        "backbone": Text(_torch_backbone, "a registered PyTorch backbone (`cvbench list`)"),
        "weights": Text(none=True, what="a weights file"),
        "mode": Text(parse_mode, "'frozen_bn', 'full' or 'last:N'"),
        "body_lr_scale": Float(0.0, 1.0, lo_open=True),
        "objective": Choice(*OBJECTIVES),
        "tta": Choice("none", "flip"),
        "normalize": Text(_normalize, "'backbone', 'auto', 'imagenet', 'cifar10', 'half', "
                                      "'none' or 'm1,m2,m3/s1,s2,s3'"),
    }

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [n for n in super()._get_param_names() if n not in cls.hidden_params]

    @classmethod
    def check_params(cls, params: dict[str, Any], context: dict[str, Any]) -> str | None:
        problem = super().check_params(params, context)
        if problem:
            return problem
        if params.get("objective") == "ordinal":
            if not params.get("val_fraction"):
                return ("objective='ordinal' fits its QWK thresholds on the validation carve: "
                        "set val_fraction > 0 (e.g. 0.2)")
            for key in ("aux_targets", "class_weight"):
                if params.get(key):
                    return f"{key} applies to classification, not to objective='ordinal'"
        return None

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = None,
                 mode: str = "frozen_bn", body_lr_scale: float = 0.1,
                 objective: str = "classification", tta: str = "none", **kwargs):
        super().__init__(**{**FINETUNE_DEFAULTS, **kwargs})
        self.backbone = backbone
        self.weights = weights
        self.mode = mode
        self.body_lr_scale = body_lr_scale
        self.objective = objective
        self.tta = tta

    def _spec(self):
        from .backbones import get_backbone

        return get_backbone(self.backbone)

    # ---------------------------------------------------------------- engine hooks

    def build_model(self, n_outputs: int) -> torch.nn.Module:
        from .models import create_model

        net = create_model(self.backbone, num_classes=self.model_outputs(n_outputs),
                           pretrained=True, weights=self.weights)
        return apply_mode(net, self.mode)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        head = {id(p) for p in model.head.parameters()}
        body = [p for p in model.parameters() if id(p) not in head]
        return [{"params": list(model.head.parameters()), "lr_scale": 1.0, "name": "head"},
                {"params": body, "lr_scale": float(self.body_lr_scale), "name": "body"}]

    def _normalization(self, x_train: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if str(self.normalize).strip().lower() == "backbone":
            spec = self._spec()
            return tuple(spec.mean), tuple(spec.std)
        return super()._normalization(x_train)

    def _image_size(self, split: Split) -> int:
        return int(self.image_size) if self.image_size else self._spec().native_size

    # ---------------------------------------------------------------- estimator API

    def fit(self, split: Split) -> FineTune:
        self.thresholds_ = None
        super().fit(split)
        net = self.model_
        groups = self.trainer_.optimizer.param_groups
        info = self.info_
        info["model"] = self.backbone
        info["finetune"] = {
            "backbone": self._spec().identity(), "mode": self.mode,
            "trainable_params": int(sum(p.numel() for p in net.parameters() if p.requires_grad)),
            "body_blocks": len(body_blocks(net.net)),
            "param_groups": [{"name": g.get("name"), "lr": float(self.lr) * g["lr_scale"],
                              "n_params": int(sum(p.numel() for p in g["params"]))} for g in groups],
            "objective": self.objective, "tta": self.tta,
        }
        if self.ordinal:
            val = self.carve(split)[1]  # the engine's validation carve (same fraction, seed, groups)
            info["ordinal"] = self.fit_thresholds(val, self._outputs(val))
        return self

    def _outputs(self, split: Split) -> torch.Tensor:
        """Raw outputs, averaged with those of the mirror images when tta="flip"."""
        x = self.pixels(split)
        outputs = self.trainer_.predict_outputs(x)
        if self.tta == "flip" and len(outputs):
            outputs = 0.5 * (outputs + self.trainer_.predict_outputs(np.ascontiguousarray(x[:, :, ::-1])))
        return outputs


register_method("finetune", family="pretrained", description=(
    "Pretrained backbone + new linear head fine-tuned with the shared engine: frozen_bn | "
    "last:N | full, discriminative lrs, warm-up, ordinal option (QWK thresholds on the "
    "validation carve)"))(FineTune)
