"""Retinopathy's own methods: fundus graders and the classical lesion statistics.

Registered methods (the first three share `FundusClassifier`; only the defaults differ):
- `retina-cnn`:         CPU-sized CNN (`FundusNet`, or any zoo model) on border-cropped
                        fundus images, softmax over the five grades.
- `retina-ordinal`:     the same with objective="ordinal": a scalar regression head; grade =
                        number of thresholds below the prediction, thresholds fitted on the
                        patient-level validation split to maximise QWK (cvbench.deep.ordinal).
- `retina-densenet201`: the study's DenseNet-201 + fastai head, body frozen except BatchNorm,
                        optionally unfrozen after `unfreeze_after` epochs (a GPU protocol;
                        needs ImageNet weights: pretrained="imagenet" or a local path).
- `retina-lesion-stats`: classical: multi-scale difference-of-Gaussians lesion statistics +
                        ridge regression + QWK thresholds (cheap, and on a CPU budget the
                        strongest grader here).

The fundus preprocessing they share is `fundus.py` beside this file. Validation splits are
grouped by the task's `val_group_key` (task.toml: patient), which the task puts in every
split's meta.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvbench.deep.classifier import DeepClassifier, _zoo_model
from cvbench.deep.engine import Callback
from cvbench.deep.models_base import ClassifierNet
from cvbench.deep.ordinal import (
    OBJECTIVES,
    OrdinalObjective,
    default_thresholds,
    grades_from_values,
    optimise_thresholds,
    threshold_scores,
)
from cvbench.errors import UserError
from cvbench.methods import Method, register_method
from cvbench.params import Bool, Choice, Float, Int, Text
from cvbench.split import Split

from .fundus import PREPROCESS_MODES, lesion_statistics, prepare_fundus


def _fundus_or_zoo(name: str) -> None:
    if name != "fundus-net":
        _zoo_model(name)


# ---------------------------------------------------------------------- augmentation


def fundus_augment(x: torch.Tensor, generator: torch.Generator, rotate: bool = True,
                   flip: bool = True, jitter: float = 0.1) -> torch.Tensor:
    """The study's augmentation on a uint8 (B, C, H, W) batch, batched on its device:
    rotation uniform in [0, 360) about the centre (black corners), horizontal and vertical
    flips (p = 0.5 each), and brightness / contrast factors ~ N(1, jitter) per image."""
    n = x.shape[0]
    if n == 0 or not (rotate or flip or jitter):
        return x
    dev = x.device
    gdev = generator.device
    out = x.float()
    if flip:
        fl = torch.rand(2, n, generator=generator, device=gdev).to(dev) < 0.5
        out = torch.where(fl[0, :, None, None, None], out.flip(-1), out)
        out = torch.where(fl[1, :, None, None, None], out.flip(-2), out)
    if rotate:
        angle = torch.rand(n, generator=generator, device=gdev).to(dev) * (2 * np.pi)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if jitter:
        f = 1 + jitter * torch.randn(2, n, generator=generator, device=gdev).to(dev)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * f[0, :, None, None, None] + mean * f[1, :, None, None, None]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_square_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random size x size window per image of a (B, C, H, W) batch (one gather, batched)."""
    n, _, h, w = x.shape
    if size >= min(h, w):
        return x
    gdev = generator.device
    oy = torch.randint(0, h - size + 1, (n,), generator=generator, device=gdev).to(x.device)
    ox = torch.randint(0, w - size + 1, (n,), generator=generator, device=gdev).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows, cols = oy[:, None] + ar, ox[:, None] + ar
    x = torch.gather(x, 2, rows[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return torch.gather(x, 3, cols[:, None, None, :].expand(-1, x.shape[1], size, -1))


# ---------------------------------------------------------------------- a CPU-sized network


class FundusNet(ClassifierNet):
    """Small ResNet for fundus photos on a CPU budget (ours, not the study's): a 5x5 stride-2
    stem and a 2x2 max-pool bring 128 px to 32 px early, then BasicBlock stages at width,
    2x, 4x and concatenated average + max pooling (max keeps small, sparse lesions)."""

    def __init__(self, num_classes: int, width: int = 16, blocks: int = 2, stages: int = 3):
        super().__init__()
        from cvbench.deep.models_base import conv_bn, init_weights
        from cvbench.deep.models_cifar import BasicBlock

        self.num_classes = num_classes
        width = int(width)
        layers: list[nn.Module] = [conv_bn(3, width, 5, 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = width
        for i in range(stages):
            w = width * 2**i
            layers += [BasicBlock(cin if b == 0 else w, w, 2 if (b == 0 and i > 0) else 1)
                       for b in range(blocks)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.num_features = 2 * cin
        self.head = nn.Linear(2 * cin, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)


# ---------------------------------------------------------------------- unfreezing


class UnfreezeBody(Callback):
    """Make the frozen parameters of `net` trainable once `after` epochs are done: they join
    the optimizer as a new param group with group 0's settings. A checkpoint keeps the epoch it
    happened at; on resume the callback unfreezes again before the optimizer's state loads, so
    the param groups match the saved ones."""

    def __init__(self, net: nn.Module, after: int):
        self.net, self.after, self.unfrozen_at = net, int(after), None

    def update(self, epochs_done: int, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze now if `epochs_done` epochs reach `after` (once)."""
        if self.unfrozen_at is None and epochs_done >= self.after:
            self._unfreeze(optimizer)
            self.unfrozen_at = epochs_done

    def on_epoch_end(self, trainer, state):
        self.update(state.epoch + 1, trainer.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen_at": self.unfrozen_at}

    def load_state_dict(self, saved, trainer):
        if saved["unfrozen_at"] is not None and self.unfrozen_at is None:
            self._unfreeze(trainer.optimizer)
            self.unfrozen_at = int(saved["unfrozen_at"])

    def _unfreeze(self, optimizer: torch.optim.Optimizer) -> None:
        frozen = [p for p in self.net.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad = True
        if frozen:
            group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
            optimizer.add_param_group({**group, "params": frozen})


# ---------------------------------------------------------------------- the method

FUNDUS_DEFAULTS = dict(model="fundus-net", image_size=128, epochs=6, batch_size=16, optimizer="adamw",
                       lr=1e-3, weight_decay=1e-4, schedule="onecycle", augment="none",
                       normalize="auto", val_fraction=0.15)


def parse_fundus_augment(spec: str | None) -> dict[str, Any]:
    """'rotate-flip-jitter:0.1' -> {"rotate": True, "flip": True, "jitter": 0.1}."""
    text = str(spec or "none").strip().lower()
    out = {"rotate": False, "flip": False, "jitter": 0.0}
    if text in ("none", "", "off"):
        return out
    for token in text.replace("+", "-").split("-"):
        name, _, arg = token.partition(":")
        if name in ("rotate", "flip") and not arg:
            out[name] = True
        elif name == "jitter":
            try:
                out["jitter"] = float(arg) if arg else 0.1
            except ValueError:
                raise UserError(f"fundus_augment {spec!r}: jitter:<sigma> needs a number") from None
        else:
            raise UserError(f"unknown fundus_augment token {token!r} in {spec!r}; "
                            "expected rotate, flip, jitter[:sigma] joined by '-', or 'none'")
    return out


def parse_model_kwargs(spec: str | None) -> dict[str, Any]:
    """'stem_stride=2,blocks=3' -> {"stem_stride": 2, "blocks": 3}."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise UserError(f"model_kwargs {spec!r}: expected key=value pairs")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            try:
                out[key.strip()] = float(value)
            except ValueError:
                out[key.strip()] = value.strip()
    return out


class FundusClassifier(OrdinalObjective, DeepClassifier):
    """Deep DR grader: fundus preprocessing (crop | crop+ben), rotation/flip/jitter
    augmentation, class weights or balanced oversampling, classification or ordinal regression.

    Extra parameters over DeepClassifier:
      fundus_prep:     "none" | "crop" | "crop+ben" (fundus.py; cached arrays; named so as not
                       to shadow the engine's preprocess hook)
      fundus_augment:  tokens "rotate", "flip" (h+v), "jitter[:sigma]" joined by "-", or "none"
      objective:       "classification" (softmax, 5 outputs) or "ordinal" (1 output, MSE, QWK
                       thresholds fitted on the validation split: cvbench.deep.ordinal)
      per_image_norm:  subtract each image's channel means and divide by its std (the study)
      freeze, unfreeze_after: freeze the body except BatchNorm (deep.models.freeze_body), and
                       unfreeze everything after that many epochs (None = never)
      model_kwargs:    extra model arguments as "key=value,key=value" (e.g. "stem_stride=2")
      train_crop:      train on random train_crop x train_crop windows of the image_size
                       images (lesions keep their full resolution at the cost of a smaller
                       input); evaluation sees whole images (the network pools globally)
    """

    parameters = {
        "model": Text(_fundus_or_zoo, "'fundus-net' or a model of the zoo"),
        "fundus_prep": Choice(*PREPROCESS_MODES),
        "fundus_augment": Text(parse_fundus_augment, "tokens rotate, flip, jitter[:sigma] joined by '-', or 'none'"),
        "objective": Choice(*OBJECTIVES),
        "per_image_norm": Bool(),
        "freeze": Bool(),
        "unfreeze_after": Int(0, none=True),
        "model_kwargs": Text(parse_model_kwargs, "key=value pairs", none=True),
        "train_crop": Int(8, 1024, none=True),
    }

    def __init__(self, fundus_prep: str = "crop+ben", fundus_augment: str = "rotate-flip-jitter",
                 objective: str = "classification",
                 per_image_norm: bool = False, freeze: bool = False, unfreeze_after: int | None = None,
                 model_kwargs: str | None = None, train_crop: int | None = None, **kwargs):
        super().__init__(**{**FUNDUS_DEFAULTS, **kwargs})
        self.fundus_prep = fundus_prep
        self.fundus_augment = fundus_augment
        self.objective = objective
        self.per_image_norm = per_image_norm
        self.freeze = freeze
        self.unfreeze_after = unfreeze_after
        self.model_kwargs = model_kwargs
        self.train_crop = train_crop

    @classmethod
    def check_params(cls, params: dict[str, Any], context: dict[str, Any]) -> str | None:
        problem = super().check_params(params, context)
        if problem:
            return problem
        crop, size = params.get("train_crop"), params.get("image_size") or 128
        if crop is not None and crop > size:
            return f"train_crop ({crop}) must not exceed image_size ({size})"
        if params.get("objective") == "ordinal" and params.get("class_weight"):
            return "class_weight applies to classification; use sampling='balanced' with objective='ordinal'"
        return None

    @staticmethod
    def migrate_params(params: dict[str, Any]) -> dict[str, Any]:
        """Record schema 2 -> 3: the ordinal objective was objective="regression" with
        decision="thresholds"; a classifier's decision was "argmax" (the only one now)."""
        params = dict(params)
        decision = params.pop("decision", "argmax")
        if params.get("objective") == "regression":
            params["objective"] = "ordinal"
        elif decision != "argmax":
            raise ValueError(f"decision={decision!r} with a classification objective is no longer a method")
        return params

    def _fundus_aug(self) -> dict[str, Any]:
        return parse_fundus_augment(self.fundus_augment)

    def _model_kwargs(self) -> dict[str, Any]:
        return parse_model_kwargs(self.model_kwargs)

    # ---------------------------------------------------------------- data

    def _prepared(self, split: Split) -> Split:
        """Fundus-preprocessed in-memory split (cached); its meta keeps the task's grouping."""
        size = int(self.image_size or 128)
        return prepare_fundus(split, size, self.fundus_prep, skip_bad=bool(split.meta.get("skip_bad")))

    # ---------------------------------------------------------------- hooks

    def build_model(self, n_outputs: int) -> torch.nn.Module:
        from cvbench.deep import models

        kwargs = self._model_kwargs()
        if self.width is not None:
            kwargs["width"] = self.width
        n = self.model_outputs(n_outputs)
        try:
            if self.model == "fundus-net":
                net = FundusNet(n, **kwargs)
            else:
                net = models.create_model(self.model, num_classes=n, pretrained=self.pretrained,
                                          **kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"cannot build model {self.model!r} with {kwargs or 'default settings'}: {exc}") from None
        if self.freeze:
            models.freeze_body(net, train_bn=True)
        self._net = net
        self._unfreeze = None
        if self.freeze and self.unfreeze_after is not None:
            self._unfreeze = UnfreezeBody(net, self.unfreeze_after)
        return net

    def callbacks(self) -> list[Callback]:
        unfreeze = getattr(self, "_unfreeze", None)
        return [*super().callbacks(), *([unfreeze] if unfreeze is not None else [])]

    @property
    def _unfrozen_at(self) -> int | None:
        unfreeze = getattr(self, "_unfreeze", None)
        return unfreeze.unfrozen_at if unfreeze is not None else None

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.train_crop:
            x = random_square_crop(x, int(self.train_crop), generator)
        x = super().augment_batch(x, generator)
        return fundus_augment(x, generator, **self._aug)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_image_norm:
            return super().preprocess(x)
        xf = x.float()
        mean = xf.mean(dim=(2, 3), keepdim=True)
        std = xf.std(dim=(2, 3), keepdim=True).clamp_min(1.0)
        return (xf - mean) / std

    def on_epoch_end(self, epoch: int, trainer) -> None:
        """The unfreezing step after 0-based `epoch`, by hand (training runs it through the
        UnfreezeBody callback; kept for tests/test_retinopathy.py)."""
        if self._unfreeze is not None:
            self._unfreeze.update(epoch + 1, trainer.optimizer)

    # ---------------------------------------------------------------- estimator API

    def fit(self, split: Split) -> FundusClassifier:
        self._aug = self._fundus_aug()
        self.thresholds_ = None
        prepared = self._prepared(split)
        super().fit(prepared)
        info = self.info_
        info["fundus_prep"] = self.fundus_prep
        info["imbalance"] = {"class_weight": self.class_weight, "sampling": self.sampling,
                             "fundus_augment": self.fundus_augment}
        if self.freeze:
            info["freeze"] = {"trainable_params_at_start": self._trainable_at_start(),
                              "unfreeze_after": self.unfreeze_after,
                              "unfrozen_at_epoch": self._unfrozen_at,
                              "note": None if self.unfreeze_after is None or self._unfrozen_at
                              else f"unfreeze_after not reached: training stopped after "
                                   f"{self.result_.epochs_run} epochs"}
        val = self.carve(prepared)[1]
        if val is not None:
            outputs = self._outputs(val)
            if self.thresholded:
                info["ordinal"] = self.fit_thresholds(val, outputs)
            info["val_metrics"] = self._val_metrics(val, outputs)
        elif self.thresholded:
            info["ordinal"] = {"objective": self.objective,
                               "thresholds": default_thresholds(self.n_classes_).tolist(), "val_n": 0,
                               "note": "no validation split (val_fraction=0): default thresholds kept"}
        return self

    def predict_scores(self, split: Split) -> np.ndarray:
        return super().predict_scores(self._prepared(split))

    def _trainable_at_start(self) -> int | None:
        from cvbench.deep.models import count_parameters

        if self._unfrozen_at is not None:
            return None
        return int(count_parameters(self._net, trainable_only=True))

    def _val_metrics(self, val: Split, outputs: torch.Tensor) -> dict[str, Any]:
        """QWK and accuracy on the validation split: what hyper-parameters are chosen by."""
        from cvbench.metrics import accuracy, quadratic_weighted_kappa

        pred = self.scores_from_outputs(outputs).argmax(1).numpy()
        out = {"n": len(val), "qwk": round(quadratic_weighted_kappa(val.labels, pred, self.n_classes_), 4),
               "accuracy": round(accuracy(val.labels, pred), 4)}
        if self.thresholded:
            out["note"] = "thresholds were fitted on this split, so its QWK is optimistic"
        return out


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"scales must be comma-separated numbers (DoG sigmas), got {text!r}") from None
    if not values or min(values) <= 0:
        raise UserError(f"scales must be positive DoG sigmas, got {text!r}")
    return values


@register_method("retina-lesion-stats", family="classical", description=(
    "Multi-scale DoG lesion statistics of the green channel + ridge regression + QWK thresholds"))
class LesionStats(Method):
    """A classical ordinal grader: `fundus.lesion_statistics` on border-cropped fundus images
    at `image_size`, standardised, ridge regression to the grade, and thresholds that maximise
    QWK on out-of-fold predictions of the training split (GroupKFold by the task's group key),
    so no separate validation split is spent. Scores as `threshold_scores`. Defaults (scales,
    alpha) were chosen by that out-of-fold QWK on the training split, not on the test split."""

    parameters = {
        "image_size": Int(32, 2048),
        "scales": Text(_sigmas, "comma-separated DoG sigmas like '0.7,1,2'"),
        "alpha": Float(0.0, lo_open=True),
        "folds": Int(2, 100),
        "seed": Int(0),
    }

    def __init__(self, image_size: int = 256, scales: str = "0.7,1,2,4,8", alpha: float = 10.0,
                 folds: int = 5, seed: int = 0):
        self.image_size = image_size
        self.scales = scales
        self.alpha = alpha
        self.folds = folds
        self.seed = seed

    def _features(self, split: Split) -> np.ndarray:
        prepared = prepare_fundus(split, int(self.image_size), "crop",
                                  skip_bad=bool(split.meta.get("skip_bad")))
        scales = _sigmas(self.scales)
        return np.stack([lesion_statistics(im, scales=scales) for im in prepared.items])

    def fit(self, split: Split) -> LesionStats:
        import time

        from sklearn.linear_model import Ridge
        from sklearn.model_selection import GroupKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from cvbench.metrics import quadratic_weighted_kappa

        t0 = time.perf_counter()
        X = self._features(split)
        t1 = time.perf_counter()
        self.model_ = make_pipeline(StandardScaler(), Ridge(alpha=float(self.alpha)))
        key = split.meta.get("val_group_key")
        groups = split.groups[key] if key in split.groups else np.arange(len(split))
        n_groups = len(set(np.asarray(groups).tolist()))
        folds = max(2, min(int(self.folds), n_groups))
        oof = cross_val_predict(self.model_, X, split.labels, groups=groups, cv=GroupKFold(folds))
        self.thresholds_ = optimise_thresholds(split.labels, oof, n_classes=split.n_classes)
        self.model_.fit(X, split.labels)
        self.n_classes_ = split.n_classes
        self.info_ = {
            "n_features": int(X.shape[1]),
            "ordinal": {"objective": "ridge regression", "thresholds": [round(float(t), 4) for t in self.thresholds_],
                        "val_n": len(split), "val_qwk_default": round(quadratic_weighted_kappa(
                            split.labels, grades_from_values(oof, default_thresholds(split.n_classes)),
                            split.n_classes), 4),
                        "val_qwk_fitted": round(quadratic_weighted_kappa(
                            split.labels, grades_from_values(oof, self.thresholds_), split.n_classes), 4),
                        "note": f"thresholds fitted on {folds}-fold out-of-fold predictions of train, "
                                f"grouped by {key or 'item'}"},
            "timings": {"features_s": round(t1 - t0, 3), "ridge_s": round(time.perf_counter() - t1, 3)},
        }
        return self

    def predict_scores(self, split: Split) -> np.ndarray:
        values = self.model_.predict(self._features(split))
        return threshold_scores(values, self.thresholds_)


register_method("retina-cnn", family="deep", description=(
    "CPU-sized CNN on border-cropped fundus images, rotation/flip/jitter augmentation"))(FundusClassifier)


@register_method("retina-ordinal", family="deep")
def retina_ordinal(**params) -> FundusClassifier:
    """Ordinal DR grader: scalar regression + QWK-optimised thresholds (val split)"""
    return FundusClassifier(**{"objective": "ordinal", **params})


@register_method("retina-densenet201", family="deep")
def retina_densenet201(**params) -> FundusClassifier:
    """The study's DenseNet-201 + fastai head, body frozen except BN (GPU protocol)"""
    return FundusClassifier(**{
        "model": "densenet201", "image_size": 256, "epochs": 20, "batch_size": 32, "optimizer": "adam",
        "lr": 1e-3, "weight_decay": 1e-6, "schedule": "onecycle", "normalize": "imagenet",
        "pretrained": "imagenet", "freeze": True, "unfreeze_after": None, "sampling": "balanced",
        "per_image_norm": True, "fundus_prep": "crop", "val_fraction": 0.2, **params})
