"""The generic deep method `cnn`: any zoo model trained from scratch with the shared engine.

A deep method is a scikit-learn-style estimator over a `Split`: `fit` decodes the images once
(`Split.pixels`, cached on disk at `image_size`), carves an optional validation split from
the training data, builds the model from the zoo (deep/models.py) and trains it with the
shared engine (deep/engine.py); `predict_scores` returns softmax probabilities (and the
auxiliary heads' probabilities, as a `Scores`). Study recipes are presets (deep/presets.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvbench.corruptions import corrupt_batch, parse_list
from cvbench.errors import UserError
from cvbench.methods import Method, Scores, key_params, register_method
from cvbench.params import AnyOf, Anything, Bool, Choice, Float, Int, Jobs, Text
from cvbench.paths import cache_dir
from cvbench.split import Split, carve_validation

from .augment import apply_augment, parse_augment, parse_normalize
from .device import device_name, set_threads
from .engine import (
    OPTIMIZERS,
    SCHEDULES,
    ImageStore,
    LRRangeTest,
    TrainConfig,
    TrainData,
    Trainer,
    TrainHooks,
    TrainingDivergedError,
)

DEFAULT_IMAGE_SIZE = 224  # for path-based splits when neither the method nor the model says


def _zoo_model(name: str) -> None:
    from .models import list_models

    if name not in list_models():
        raise ValueError(f"not in the model zoo ({', '.join(list_models())})")


def _schedule(name: str) -> None:
    if name.lower().replace("-", "").replace("_", "") not in SCHEDULES:
        raise ValueError(f"expected one of {', '.join(SCHEDULES)}")


def _sampling(spec: str) -> None:
    if not spec.startswith("balanced") or (":" in spec and not spec.split(":", 1)[1]):
        raise ValueError("expected 'balanced' or 'balanced:<group key>'")


def parse_aux_targets(spec: str | None) -> list[tuple[str, int | None]]:
    """'gender:2,age:9' -> [("gender", 2), ("age", 9)]; a size is optional ('gender,age')."""
    out = []
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        key, _, size = part.partition(":")
        if not key.strip():
            raise ValueError(f"empty head name in {spec!r}")
        try:
            out.append((key.strip(), int(size) if size.strip() else None))
        except ValueError:
            raise ValueError(f"head size {size!r} in {spec!r} is not an integer") from None
    return out


DEEP_PARAMETERS = {
    "model": Text(_zoo_model, "a model of the zoo (`cvbench list` shows them)"),
    "width": Float(0.0, 16.0, lo_open=True, none=True),
    "image_size": Int(8, 1024, none=True),
    "epochs": Int(1, 100_000),
    "batch_size": Int(1, 65_536),
    "optimizer": Choice(*OPTIMIZERS),
    "lr": Float(0.0, 100.0, lo_open=True),
    "momentum": Float(0.0, 1.0),
    "nesterov": Bool(),
    "weight_decay": Float(0.0, 1.0),
    "schedule": Text(_schedule, "a schedule: " + ", ".join(SCHEDULES)),
    "warmup_epochs": Float(0.0),
    "label_smoothing": Float(0.0, 0.99),
    "grad_clip": Float(0.0, lo_open=True, none=True),
    "grad_clip_mode": Choice("norm", "value"),
    "amp": AnyOf(Choice("auto", "bf16", "fp16"), Bool()),
    "channels_last": AnyOf(Choice("auto"), Bool()),
    "compile": Bool(),
    "time_budget_s": Float(0.0, lo_open=True, none=True),
    "budget_clock": Choice("wall", "process"),
    "val_fraction": Float(0.0, 0.9),
    "val_group": Text(none=True),
    "early_stopping": Int(0),
    "augment": Text(lambda s: parse_augment(s, 32), "an augmentation spec like 'flip-crop' or 'none'"),
    "normalize": Text(parse_normalize, "'auto', 'cifar10', 'imagenet', 'half', 'none' or 'm1,m2,m3/s1,s2,s3'"),
    "pretrained": Text(none=True, what="'imagenet' or a weights file"),
    "class_weight": Choice("balanced", none=True),
    "sampling": Text(_sampling, "'balanced' or 'balanced:<group key>'", none=True),
    "aux_targets": Text(parse_aux_targets, "extra-label heads like 'gender:2,age:9'", none=True),
    "corruption_augment": Text(parse_list, "corruptions like 'gaussian_noise:3,jpeg:3'", none=True),
    "corruption_p": Float(0.0, 1.0),
    "protocol": Text(none=True),
    "eval_batch_size": Int(1, none=True),
    "seed": Int(0),
    "device": Anything(),
    "n_jobs": Jobs(),
    "resume": Bool(),
}


class DeepClassifier(Method, TrainHooks):
    """Train a model from the zoo on a split with the shared engine (generic: set `model`).

    Parameters (all plain values, so a suite TOML can set them):
      model, width:      zoo name (deep.models.create_model) and width multiplier if it has one
      image_size:        side images are resized to (None: the data's own size, else 224)
      epochs, batch_size, optimizer ("sgd"|"adam"|"adamw"), lr, momentum, nesterov,
      weight_decay, schedule ("cosine"|"onecycle"|"step"|"linear"|"constant"), warmup_epochs,
      label_smoothing, grad_clip (+ grad_clip_mode "norm"|"value"): as in deep/engine.py
      amp ("auto"|True|False|"bf16"|"fp16"), channels_last ("auto"|True|False), compile
      time_budget_s:     stop training after this many seconds (the schedule anneals to it);
                         budget_clock "wall" (default) or "process" (CPU seconds of this
                         process: on a shared CPU, the budget a dedicated core would give)
      val_fraction:      carve a stratified validation split from train (0 = none); grouped
                         by `val_group` (else split.meta["val_group_key"]) when set
      early_stopping:    patience in epochs on validation accuracy (0 = off; best weights kept)
      augment:           "flip-crop", "none", "flip-crop-cutout:8", ... (deep/augment.py)
      normalize:         "auto" (train statistics), "cifar10", "imagenet", "half", "none", or
                         "m1,m2,m3/s1,s2,s3"
      pretrained:        weights for deep.models.create_model (a path), or None
      protocol:          label of the training protocol for the record ("study A: 200
                         epochs"); None = derived from the budget ("cpu budget: 5 epochs")
      seed, device, n_jobs, resume: runtime; resume continues from this run's checkpoint

    Extension hooks (subclasses take their own parameters plus **kwargs for these):
      class_weight="balanced":  loss weights n / (k * count_c), inverse class frequency
      sampling="balanced":      each epoch draws n items with replacement, p ~ 1/count(class)
      sampling="balanced:KEY":  the same over split.groups[KEY] (e.g. race) instead of labels
      aux_targets="gender:2,age:9": extra heads on the same model (outputs = n_classes + 2 +
          9); targets are split.groups[KEY] mapped through split.meta[f"{KEY}_classes"] (else
          sorted unique values); loss = sum of the heads' cross-entropies; predict_scores
          returns Scores(main, aux={"gender": (n, 2) probs, "age": (n, 9) probs}); the heads are
          the task's extra labels (Split.aux_classes)
      Overridable methods: build_model(n_outputs), targets(split), compute_loss(outputs,
      targets), scores_from_outputs(outputs), augment_batch(x_uint8, generator),
      preprocess(x_uint8), pixels(split); embed(split) -> (n, D) features via
      model.forward_features (retrieval).
    A task condition's training-batch augmentation (Split.augment, e.g. occlusion masks) is
    applied per batch after the method's own augmentation (batch_augment = True).
    """

    parameters = DEEP_PARAMETERS
    batch_augment = True

    @classmethod
    def check_params(cls, params: dict[str, Any], context: dict[str, Any]) -> str | None:
        if params.get("early_stopping") and not params.get("val_fraction"):
            return "early_stopping needs a validation split: set val_fraction > 0 (e.g. 0.1)"
        return None

    def __init__(
        self,
        model: str = "resnet-small",
        width: float | None = None,
        image_size: int | None = None,
        epochs: int = 10,
        batch_size: int = 128,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        grad_clip: float | None = None,
        grad_clip_mode: str = "norm",
        amp: Any = "auto",
        channels_last: Any = "auto",
        compile: bool = False,
        time_budget_s: float | None = None,
        budget_clock: str = "wall",
        val_fraction: float = 0.0,
        val_group: str | None = None,
        early_stopping: int = 0,
        augment: str = "flip-crop",
        normalize: str = "auto",
        pretrained: str | None = None,
        class_weight: str | None = None,
        sampling: str | None = None,
        aux_targets: str | None = None,
        corruption_augment: str | None = None,
        corruption_p: float = 0.5,
        protocol: str | None = None,
        eval_batch_size: int | None = None,
        seed: int = 0,
        device: str = "auto",
        n_jobs: int | None = None,
        resume: bool = False,
    ):
        self.model = model
        self.width = width
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.label_smoothing = label_smoothing
        self.grad_clip = grad_clip
        self.grad_clip_mode = grad_clip_mode
        self.amp = amp
        self.channels_last = channels_last
        self.compile = compile
        self.time_budget_s = time_budget_s
        self.budget_clock = budget_clock
        self.val_fraction = val_fraction
        self.val_group = val_group
        self.early_stopping = early_stopping
        self.augment = augment
        self.normalize = normalize
        self.pretrained = pretrained
        self.class_weight = class_weight
        self.sampling = sampling
        self.aux_targets = aux_targets
        self.corruption_augment = corruption_augment
        self.corruption_p = corruption_p
        self.protocol = protocol
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.device = device
        self.n_jobs = n_jobs
        self.resume = resume

    # ------------------------------------------------------------------ overridable hooks

    def build_model(self, n_outputs: int) -> torch.nn.Module:
        """The network with `n_outputs` logits (main classes + auxiliary heads)."""
        from . import models

        kwargs: dict[str, Any] = {}
        if self.width is not None:
            kwargs["width"] = self.width
        try:
            return models.create_model(self.model, num_classes=n_outputs, pretrained=self.pretrained, **kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"cannot build model {self.model!r} with {kwargs or 'default settings'}: {exc}") from None

    def targets(self, split: Split) -> torch.Tensor:
        """Loss targets: labels (N,), or (N, 1 + n_aux) with the auxiliary heads' targets."""
        labels = torch.as_tensor(split.labels, dtype=torch.int64)
        if not self.aux_heads_:
            return labels
        cols = [labels]
        for key, _classes in self.aux_heads_:
            aux = split.aux_labels(key)
            cols.append(torch.as_tensor(np.where(aux >= 0, aux, -100), dtype=torch.int64))
        return torch.stack(cols, dim=1)

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the main head (class weights, label smoothing) + aux heads."""
        k = self.n_classes_
        weight = self._class_weight_t
        if weight is not None and weight.device != outputs.device:
            weight = self._class_weight_t = weight.to(outputs.device)
        main_t = targets if targets.ndim == 1 else targets[:, 0]
        loss = F.cross_entropy(outputs[:, :k].float(), main_t, weight=weight,
                               label_smoothing=float(self.label_smoothing))
        offset = k
        for j, (_key, classes) in enumerate(self.aux_heads_):
            logits = outputs[:, offset:offset + len(classes)].float()
            loss = loss + F.cross_entropy(logits, targets[:, 1 + j], ignore_index=-100,
                                          label_smoothing=float(self.label_smoothing))
            offset += len(classes)
        return loss

    def scores_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of the main head."""
        return torch.softmax(outputs[:, : self.n_classes_].float(), dim=1)

    def callbacks(self) -> list:
        """The method's own engine callbacks (a subclass adds its own to these)."""
        return list(getattr(self, "_extra_callbacks", ()))

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a (B, C, H, W) uint8 batch on the device, then apply the training split's
        condition augmentation (e.g. pasted occlusion masks), if any, and the method's own
        corruption defence (`corruption_augment`: each image, with probability corruption_p,
        corrupted as the test-side corruption condition would)."""
        x = apply_augment(x, self.augment_spec_, generator)
        cond = getattr(self, "condition_augment_", None)
        corruptions = parse_list(self.corruption_augment)
        if cond is None and not corruptions:
            return x
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        rng = np.random.default_rng(seed)
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        if cond is not None:
            arr = cond.apply(arr, rng, float(cond.p))
        if corruptions:
            arr = corrupt_batch(arr, corruptions, float(self.corruption_p), rng)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(x.device).permute(0, 3, 1, 2)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float."""
        mean, std = self._norm_tensors(x.device)
        return (x.float() - mean) / std

    def pixels(self, split: Split) -> np.ndarray:
        """The split as uint8 (N, S, S, 3) at this method's image size (decoded once, cached)."""
        size = getattr(self, "image_size_", None) or self._image_size(split)
        return split.pixels(size, "rgb", self.n_jobs)

    def embed(self, split: Split) -> np.ndarray:
        """(n, D) float32 embeddings from model.forward_features (for retrieval / k-NN)."""
        self._check_fitted()
        store = ImageStore(self.pixels(split), self.trainer_.device)
        net = self.model_
        net.eval()
        bs = self.eval_batch_size or max(256, self.batch_size)
        out = []
        with torch.no_grad():
            for start in range(0, len(store), bs):
                idx = torch.arange(start, min(start + bs, len(store)))
                with self.trainer_._autocast():
                    out.append(net.forward_features(self.trainer_._inputs(store.batch(idx))).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ estimator API

    def lr_range_test(self, split: Split, lr_min: float = 1e-6, lr_max: float = 1.0,
                      steps: int | None = 100) -> dict[str, Any]:
        """The learning-rate range test (`engine.LRRangeTest`) on `split`: a fresh network of
        this configuration (its loss, augmentation and batches) trained for at most one pass,
        `steps` steps, while the lr grows exponentially from lr_min to lr_max; no validation
        carve, time budget or checkpoint. Returns the curve and the suggested lr."""
        from sklearn.base import clone

        finder = LRRangeTest(lr_min, lr_max, steps)
        trial = clone(self).set_params(epochs=1, lr=float(lr_max), val_fraction=0.0, early_stopping=0,
                                       time_budget_s=None, resume=False, warmup_epochs=0.0)
        trial._extra_callbacks, trial._checkpoint = [finder], False
        try:
            trial.fit(split)
        except TrainingDivergedError:  # the loss became inf / nan: the curve up to it stays
            finder.stopped = "diverged"
        return finder.result()

    def carve(self, split: Split) -> tuple[Split, Split | None]:
        """(train, validation) as `fit` splits `split`: val_fraction of it, seeded, grouped by
        val_group or the task's val_group_key; validation is None when val_fraction is 0."""
        if not (self.val_fraction and self.val_fraction > 0):
            return split, None
        group = self.val_group or split.meta.get("val_group_key")
        return carve_validation(split, float(self.val_fraction), seed=int(self.seed), group_key=group)

    def fit(self, split: Split) -> DeepClassifier:
        """Train on `split` (minus a carved validation part when val_fraction > 0)."""
        t_start = time.perf_counter()
        set_threads(self.n_jobs)
        torch.manual_seed(int(self.seed))
        self.condition_augment_ = split.augment
        self.classes_ = split.classes
        self.n_classes_ = split.n_classes
        train, val = self.carve(split)
        self.aux_heads_ = self._aux_heads(train)
        self.image_size_ = self._image_size(split)
        self.augment_spec_ = parse_augment(self.augment, self.image_size_)

        t0 = time.perf_counter()
        x_train = self.pixels(train)
        x_val = self.pixels(val) if val is not None else None
        decode_s = time.perf_counter() - t0
        self.mean_, self.std_ = self._normalization(x_train)
        self._norm_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._class_weight_t = self._class_weights(train)
        sample_weights = self._sample_weights(train)

        n_outputs = self.n_classes_ + sum(len(c) for _k, c in self.aux_heads_)
        net = self.build_model(n_outputs)
        config = self._train_config(split, val)
        trainer = Trainer(net, config, hooks=self)
        result = trainer.fit(
            TrainData(x_train, self.targets(train), train.labels, sample_weights),
            TrainData(x_val, self.targets(val), val.labels) if val is not None else None,
        )
        self.model_ = trainer.model
        self.trainer_ = trainer
        self.result_ = result
        self.info_ = self._info(result, train, val, net, trainer, decode_s, time.perf_counter() - t_start)
        return self

    def predict_scores(self, split: Split) -> np.ndarray | Scores:
        """(n, n_classes) softmax probabilities; with auxiliary heads, a Scores whose aux
        holds each head's probabilities."""
        self._check_fitted()
        outputs = self._outputs(split)
        if len(outputs) == 0:
            return np.zeros((0, self.n_classes_))
        scores = self.scores_from_outputs(outputs).numpy().astype(np.float64)
        if not self.aux_heads_:
            return scores
        aux = {}
        offset = self.n_classes_
        for key, classes in self.aux_heads_:
            logits = outputs[:, offset:offset + len(classes)]
            aux[key] = torch.softmax(logits, dim=1).numpy().astype(np.float64)
            offset += len(classes)
        return Scores(scores, aux)

    # ------------------------------------------------------------------ internals

    def _outputs(self, split: Split) -> torch.Tensor:
        """The trained net's raw outputs (n, n_outputs) on `split` (a method may average
        test-time augmentations here)."""
        return self.trainer_.predict_outputs(self.pixels(split))

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(split) first")

    def _image_size(self, split: Split) -> int:
        if self.image_size:
            return int(self.image_size)
        if split.in_memory and split.items.ndim >= 3:
            return int(split.items.shape[1])
        size = _model_info(self.model).get("input_size") or DEFAULT_IMAGE_SIZE
        return int(size[-1] if isinstance(size, (tuple, list)) else size)

    def _aux_heads(self, train: Split) -> list[tuple[str, tuple[str, ...]]]:
        """The auxiliary heads: the task's extra labels named by aux_targets."""
        heads = []
        for key, size in parse_aux_targets(self.aux_targets):
            if key not in train.aux_classes:
                raise UserError(f"aux_targets names {key!r}, but the task's extra labels are "
                                f"{sorted(train.aux_classes) or 'none'}")
            classes = train.aux_classes[key]
            if size is not None and size != len(classes):
                raise UserError(
                    f"aux_targets declares {key}:{size} but the task has {len(classes)} {key} classes {list(classes)}"
                )
            heads.append((key, classes))
        return heads

    def _normalization(self, x_train: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        parsed = parse_normalize(self.normalize)
        if parsed is not None:
            return parsed
        sample = x_train[:: max(1, len(x_train) // 5000)].reshape(-1, x_train.shape[-1]).astype(np.float64) / 255
        return tuple(sample.mean(0).round(4).tolist()), tuple(np.maximum(sample.std(0), 1e-3).round(4).tolist())

    def _norm_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._norm_cache:
            mean = torch.tensor(self.mean_, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
            std = torch.tensor(self.std_, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
            self._norm_cache[key] = (mean, std)
        return self._norm_cache[key]

    def _class_weights(self, train: Split) -> torch.Tensor | None:
        if self.class_weight != "balanced":
            return None
        counts = train.class_counts().astype(np.float64)
        w = np.where(counts > 0, len(train) / (train.n_classes * np.maximum(counts, 1)), 0.0)
        return torch.as_tensor(w, dtype=torch.float32)

    def _sample_weights(self, train: Split) -> np.ndarray | None:
        if not self.sampling:
            return None
        _, _, key = str(self.sampling).partition(":")
        if key:
            if key not in train.groups:
                raise UserError(f"sampling {self.sampling!r}: {train.name} has no group {key!r} (groups: {sorted(train.groups)})")
            values = np.asarray([str(v) for v in train.groups[key]])
        else:
            values = train.labels
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        return (1.0 / counts[inverse]).astype(np.float64)

    def _train_config(self, split: Split, val: Split | None) -> TrainConfig:
        ckpt = (cache_dir("checkpoints") / f"{self._run_hash(split, val)}.pt"
                if getattr(self, "_checkpoint", True) else None)
        return TrainConfig(
            epochs=int(self.epochs), batch_size=int(self.batch_size), eval_batch_size=self.eval_batch_size,
            optimizer=str(self.optimizer).lower(), lr=float(self.lr), momentum=float(self.momentum),
            nesterov=bool(self.nesterov), weight_decay=float(self.weight_decay),
            schedule=str(self.schedule).lower().replace("-", "").replace("_", ""),
            warmup_epochs=float(self.warmup_epochs),
            grad_clip=float(self.grad_clip) if self.grad_clip else None, grad_clip_mode=self.grad_clip_mode,
            amp=self.amp, channels_last=self.channels_last, compile=bool(self.compile),
            time_budget_s=float(self.time_budget_s) if self.time_budget_s else None,
            budget_clock=str(self.budget_clock),
            early_stopping=int(self.early_stopping or 0), seed=int(self.seed), device=self.device,
            checkpoint_path=str(ckpt) if ckpt else None, resume=bool(self.resume),
            desc=getattr(self, "registered_name", type(self).__name__),
        )

    def run_key_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` without those that cannot change the trained weights: resume always,
        budget_clock when there is no time budget, the corruption defence when it is off (for
        run keys and checkpoint names)."""
        params = {k: v for k, v in params.items() if k != "resume"}
        if not params.get("time_budget_s"):
            params.pop("budget_clock", None)
        if not params.get("corruption_augment"):  # no defence: the runs from before it existed
            params.pop("corruption_augment", None)
            params.pop("corruption_p", None)
        return params

    def _run_hash(self, split: Split, val: Split | None) -> str:
        params = self.run_key_params(key_params(self))
        blob = json.dumps([type(self).__module__, type(self).__qualname__, params, int(self.seed),
                           split.cache_key, val.cache_key if val is not None else None],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _info(self, result, train: Split, val: Split | None, net, trainer: Trainer,
              decode_s: float, wall_s: float) -> dict[str, Any]:
        curves = {k: [_clean(v) for v in vals] for k, vals in result.curves.items()}
        if val is None:
            for k in ("val_loss", "val_acc"):
                curves.pop(k, None)
        budget = {
            "epochs": int(self.epochs),
            "time_budget_s": float(self.time_budget_s) if self.time_budget_s else None,
            "budget_clock": self.budget_clock,
            "budget_used_s": result.budget_used_s,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stop_reason != "completed",
            "stop_reason": result.stop_reason,
            "protocol": self.protocol or _protocol(trainer.device.type, int(self.epochs), self.time_budget_s,
                                                   result.epochs_run, self.budget_clock),
        }
        from .models import count_parameters as zoo_count

        n_params = int(zoo_count(net))
        return {
            "backend": "torch",
            "model": self.model,
            "n_params": n_params,
            "image_size": self.image_size_,
            "device_name": device_name(trainer.device),
            "amp": result.amp,
            "channels_last": result.channels_last,
            "compiled": result.compiled,
            "world_size": result.world_size,
            "train_images_per_s": round(result.images_per_s, 1),
            "wall_s": round(wall_s, 2),
            "curves": curves,
            "budget": budget,
            "best_epoch": result.best_epoch,
            "resumed_from_epoch": result.resumed_from_epoch,
            "steps": result.steps,
            "n_train": len(train),
            "n_val": len(val) if val is not None else 0,
            "normalize": {"mean": list(self.mean_), "std": list(self.std_)},
            "augment": self.augment,
            "class_weight": (self._class_weight_t.cpu().round(decimals=4).tolist()
                             if self._class_weight_t is not None else None),
            "sampling": self.sampling,
            "aux_classes": {k: list(c) for k, c in self.aux_heads_} or None,
            "timings": {"decode_s": round(decode_s, 3), "train_s": round(result.train_s, 3)},
        }


def _protocol(device_type: str, epochs: int, time_budget_s: float | None, epochs_run: int,
              clock: str = "wall") -> str:
    """Budget label that keeps a short CPU run from passing as a study's full protocol."""
    text = f"{device_type} budget: {epochs} epochs"
    if time_budget_s:
        unit = "CPU s" if clock == "process" else "s"
        text += f", {time_budget_s:g} {unit} limit ({epochs_run} run)"
    return text


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _model_info(name: str) -> dict[str, Any]:
    """The zoo's facts about `name` ({} for a model outside the zoo, e.g. fundus-net)."""
    from .models import list_models, model_info

    return dict(model_info(name) or {}) if name in list_models() else {}


register_method("cnn", family="deep", description="Any zoo model (param model=...) trained from scratch with the shared engine")(DeepClassifier)
