"""Deep methods for diabetic-retinopathy grading: fundus preprocessing, the study's
augmentation, class-imbalance handling, an ordinal (regression + QWK thresholds) option and
the DenseNet-201 study protocol.

Registered methods (the first three share `FundusClassifier`; only the defaults differ):
- `retina-cnn`:         CPU-sized CNN (`FundusNet`, or any zoo model) on border-cropped
                        fundus images, softmax over the five grades.
- `retina-ordinal`:     the same with a scalar regression head; grade = number of thresholds
                        below the prediction, thresholds fitted on the patient-level
                        validation split to maximise QWK (Nelder-Mead over 4 sorted values).
- `retina-densenet201`: the study's DenseNet-201 + fastai head, body frozen except BatchNorm,
                        optionally unfrozen after `unfreeze_after` epochs (a GPU protocol;
                        needs ImageNet weights, pretrained="imagenet" or a local path).
- `retina-lesion-stats`: classical: multi-scale difference-of-Gaussians lesion statistics +
                        ridge regression + QWK thresholds (cheap, and on a CPU budget the
                        strongest grader here).

Scores of a thresholded model (see `threshold_scores`): scores[:, k] = -(distance, in grade
units, from the model's scalar grade to the interval (t_k, t_{k+1}] of grade k), so the
thresholded grade scores exactly 0, every other grade < 0, and argmax is the thresholded grade.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvbench.errors import UserError
from cvbench.methods import Method, register_method
from cvbench.metrics import quadratic_weighted_kappa_fast
from cvbench.params import Bool, Choice, Float, Int, Text
from cvbench.split import Split
from cvbench.tasks.retinopathy.fundus import PREPROCESS_MODES, prepare_fundus

from .classifier import DeepClassifier, _zoo_model
from .engine import Callback
from .models_base import ClassifierNet

DEFAULT_THRESHOLDS = (0.5, 1.5, 2.5, 3.5)


def _fundus_or_zoo(name: str) -> None:
    if name != "fundus-net":
        _zoo_model(name)
OBJECTIVES = ("classification", "regression")
DECISIONS = ("argmax", "thresholds")


# ---------------------------------------------------------------------- ordinal decisions


def grades_from_values(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Grade = number of (sorted) thresholds strictly below each scalar value."""
    t = np.sort(np.asarray(thresholds, dtype=np.float64))
    return np.searchsorted(t, np.asarray(values, dtype=np.float64), side="left").astype(np.int64)


def threshold_scores(values: torch.Tensor | np.ndarray, thresholds) -> torch.Tensor | np.ndarray:
    """(n, k+1) scores = -distance from each value to grade j's interval (t_j, t_{j+1}].

    The interval holding the value scores 0 and all others < 0 (a value exactly on t_{j+1}
    ties grades j and j+1, and argmax picks the lower, as `grades_from_values` does)."""
    as_numpy = not isinstance(values, torch.Tensor)
    v = torch.as_tensor(np.asarray(values, dtype=np.float64) if as_numpy else values)
    t = torch.sort(torch.as_tensor(np.asarray(thresholds, dtype=np.float64), dtype=v.dtype,
                                   device=v.device)).values
    inf = torch.full((1,), float("inf"), dtype=v.dtype, device=v.device)
    lo, hi = torch.cat([-inf, t]), torch.cat([t, inf])
    v = v.reshape(-1, 1)
    dist = torch.clamp(lo[None, :] - v, min=0) + torch.clamp(v - hi[None, :], min=0)
    scores = -dist
    return scores.numpy() if as_numpy else scores


def fast_qwk(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 5) -> float:
    """Quadratic weighted kappa without sklearn, for the threshold optimiser's inner loop
    (cvbench.metrics.quadratic_weighted_kappa_fast)."""
    return quadratic_weighted_kappa_fast(y_true, y_pred, n_classes)


def optimise_thresholds(y_true: np.ndarray, values: np.ndarray, n_classes: int = 5,
                        init: tuple[float, ...] | None = None, max_iter: int = 1000) -> np.ndarray:
    """Sorted thresholds maximising QWK of `grades_from_values(values, t)` against y_true.

    Nelder-Mead (scipy) on the step-shaped objective, started from the grade mid-points and
    from the quantiles matching the true class shares; the better of the two (never worse
    than the mid-points) is returned."""
    from scipy.optimize import minimize

    y = np.asarray(y_true, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    mid = np.asarray(init if init is not None else np.arange(n_classes - 1) + 0.5, dtype=np.float64)

    def loss(t: np.ndarray) -> float:
        return -fast_qwk(y, grades_from_values(v, t), n_classes)

    starts = [mid]
    shares = np.cumsum(np.bincount(y, minlength=n_classes))[:-1] / max(1, len(y))
    if len(v) and 0 < shares.min() and shares.max() < 1:
        starts.append(np.quantile(v, shares))
    best_t, best = mid, loss(mid)
    for start in starts:
        res = minimize(loss, start, method="Nelder-Mead",
                       options={"maxiter": max_iter, "xatol": 1e-3, "fatol": 1e-6,
                                "initial_simplex": _simplex(start)})
        if res.fun < best - 1e-12:
            best_t, best = np.sort(res.x), float(res.fun)
    return np.sort(best_t)


def fit_validation_thresholds(y_true: np.ndarray, values: np.ndarray,
                              n_classes: int) -> tuple[np.ndarray, dict[str, Any]]:
    """`optimise_thresholds` on a validation split's scalar grades, and what a record keeps of
    it: the default and fitted thresholds, the split's size and its QWK under each."""
    default_qwk = fast_qwk(y_true, grades_from_values(values, DEFAULT_THRESHOLDS), n_classes)
    t = optimise_thresholds(y_true, values, n_classes=n_classes)
    fitted_qwk = fast_qwk(y_true, grades_from_values(values, t), n_classes)
    return t, {"default_thresholds": list(DEFAULT_THRESHOLDS),
               "thresholds": [round(float(v), 4) for v in t], "val_n": len(y_true),
               "val_qwk_default": round(float(default_qwk), 4),
               "val_qwk_fitted": round(float(fitted_qwk), 4)}


def _simplex(start: np.ndarray, step: float = 0.3) -> np.ndarray:
    """A simplex wide enough to leave the flat step of the start point."""
    return np.vstack([start] + [start + step * np.eye(len(start))[i] for i in range(len(start))])


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
        from .models_base import conv_bn, init_weights
        from .models_cifar import BasicBlock

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


class FundusClassifier(DeepClassifier):
    """Deep DR grader: fundus preprocessing (crop | crop+ben), rotation/flip/jitter
    augmentation, class weights or balanced oversampling, classification or ordinal regression.

    Extra parameters over DeepClassifier:
      fundus_prep:     "none" | "crop" | "crop+ben" (cvbench.tasks.retinopathy.fundus; cached arrays; named so
                       as not to shadow the engine's preprocess hook)
      fundus_augment:  tokens "rotate", "flip" (h+v), "jitter[:sigma]" joined by "-", or "none"
      objective:       "classification" (softmax, 5 outputs) or "regression" (1 output, MSE)
      decision:        "argmax" or "thresholds" (expected / regressed grade, thresholds fitted
                       on the validation split to maximise QWK); regression always thresholds
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
        "decision": Choice(*DECISIONS),
        "per_image_norm": Bool(),
        "freeze": Bool(),
        "unfreeze_after": Int(0, none=True),
        "model_kwargs": Text(parse_model_kwargs, "key=value pairs", none=True),
        "train_crop": Int(8, 1024, none=True),
    }

    def __init__(self, fundus_prep: str = "crop+ben", fundus_augment: str = "rotate-flip-jitter",
                 objective: str = "classification", decision: str = "argmax",
                 per_image_norm: bool = False, freeze: bool = False, unfreeze_after: int | None = None,
                 model_kwargs: str | None = None, train_crop: int | None = None, **kwargs):
        super().__init__(**{**FUNDUS_DEFAULTS, **kwargs})
        self.fundus_prep = fundus_prep
        self.fundus_augment = fundus_augment
        self.objective = objective
        self.decision = decision
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
        if params.get("objective") == "regression" and params.get("class_weight"):
            return "class_weight applies to classification; use sampling='balanced' with regression"
        return None

    def _fundus_aug(self) -> dict[str, Any]:
        return parse_fundus_augment(self.fundus_augment)

    def _model_kwargs(self) -> dict[str, Any]:
        return parse_model_kwargs(self.model_kwargs)

    @property
    def thresholded(self) -> bool:
        return self.objective == "regression" or self.decision == "thresholds"

    # ---------------------------------------------------------------- data

    def _prepared(self, split: Split) -> Split:
        """Fundus-preprocessed in-memory split (cached), carrying the patient grouping."""
        size = int(self.image_size or 128)
        out = prepare_fundus(split, size, self.fundus_prep, skip_bad=bool(split.meta.get("skip_bad")))
        if "patient" in out.groups and not out.meta.get("val_group_key"):
            out = replace(out, meta={**out.meta, "val_group_key": "patient"})
        return out

    # ---------------------------------------------------------------- hooks

    def build_model(self, n_outputs: int) -> torch.nn.Module:
        from . import models

        kwargs = self._model_kwargs()
        if self.width is not None:
            kwargs["width"] = self.width
        n = 1 if self.objective == "regression" else n_outputs
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

    def targets(self, split: Split) -> torch.Tensor:
        if self.objective == "regression":
            return torch.as_tensor(split.labels, dtype=torch.float32)
        return super().targets(split)

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.objective == "regression":
            return F.mse_loss(outputs[:, 0].float(), targets.float())
        return super().compute_loss(outputs, targets)

    def scalar_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's continuous grade: the regression output, or the softmax expectation."""
        if self.objective == "regression":
            return outputs[:, 0].float()
        p = torch.softmax(outputs[:, : self.n_classes_].float(), dim=1)
        return p @ torch.arange(self.n_classes_, dtype=p.dtype, device=p.device)

    def scores_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        if not self.thresholded:
            return super().scores_from_outputs(outputs)
        t = getattr(self, "thresholds_", DEFAULT_THRESHOLDS)
        return threshold_scores(self.scalar_grade(outputs), t)

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
        self.validate({"n_train": len(split)})
        self._aug = self._fundus_aug()
        self.thresholds_ = np.asarray(DEFAULT_THRESHOLDS, dtype=np.float64)
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
            outputs = self.trainer_.predict_outputs(self.pixels(val))
            if self.thresholded:
                info["ordinal"] = self._fit_thresholds(val, outputs)
            info["val_metrics"] = self._val_metrics(val, outputs)
        elif self.thresholded:
            info["ordinal"] = {"objective": self.objective, "thresholds": list(DEFAULT_THRESHOLDS),
                               "val_n": 0, "note": "no validation split (val_fraction=0): default thresholds kept"}
        return self

    def predict_scores(self, split: Split) -> np.ndarray:
        return super().predict_scores(self._prepared(split))

    def _trainable_at_start(self) -> int | None:
        from .models import count_parameters

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

    def _fit_thresholds(self, val: Split, outputs: torch.Tensor) -> dict[str, Any]:
        """Thresholds maximising QWK on the patient-level validation split."""
        self.thresholds_, info = fit_validation_thresholds(
            val.labels, self.scalar_grade(outputs).numpy(), self.n_classes_)
        return {"objective": self.objective, **info}


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
    """A classical ordinal grader: `cvbench.tasks.retinopathy.fundus.lesion_statistics` on border-cropped
    fundus images at `image_size`, standardised, ridge regression to the grade, and thresholds
    that maximise QWK on out-of-fold predictions of the training split (GroupKFold by patient),
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
        from cvbench.tasks.retinopathy.fundus import lesion_statistics

        prepared = prepare_fundus(split, int(self.image_size), "crop",
                                  skip_bad=bool(split.meta.get("skip_bad")))
        scales = _sigmas(self.scales)
        return np.stack([lesion_statistics(im, scales=scales) for im in prepared.items])

    def fit(self, split: Split) -> LesionStats:
        import time

        self.validate({"n_train": len(split)})
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import GroupKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from cvbench.metrics import quadratic_weighted_kappa

        t0 = time.perf_counter()
        X = self._features(split)
        t1 = time.perf_counter()
        self.model_ = make_pipeline(StandardScaler(), Ridge(alpha=float(self.alpha)))
        groups = split.groups.get("patient", np.arange(len(split)))
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
                            split.labels, grades_from_values(oof, DEFAULT_THRESHOLDS), 5), 4),
                        "val_qwk_fitted": round(quadratic_weighted_kappa(
                            split.labels, grades_from_values(oof, self.thresholds_), 5), 4),
                        "note": f"thresholds fitted on {folds}-fold out-of-fold predictions of train, grouped by patient"},
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
    return FundusClassifier(**{"objective": "regression", "decision": "thresholds", **params})


@register_method("retina-densenet201", family="deep")
def retina_densenet201(**params) -> FundusClassifier:
    """The study's DenseNet-201 + fastai head, body frozen except BN (GPU protocol)"""
    return FundusClassifier(**{
        "model": "densenet201", "image_size": 256, "epochs": 20, "batch_size": 32, "optimizer": "adam",
        "lr": 1e-3, "weight_decay": 1e-6, "schedule": "onecycle", "normalize": "imagenet",
        "pretrained": "imagenet", "freeze": True, "unfreeze_after": None, "sampling": "balanced",
        "per_image_norm": True, "fundus_prep": "crop", "val_fraction": 0.2, **params})
