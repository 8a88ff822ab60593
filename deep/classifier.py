"""Deep methods: one generic `DeepClassifier` and per-architecture variants for the suites.

A deep method is a scikit-learn-style estimator over a `Split`: `fit` decodes the images once
(in memory, or cached on disk at `image_size`), carves an optional validation split from the
training data, builds the model from the zoo (deep/models.py) and trains it with the shared
engine (deep/engine.py); `predict_scores` returns softmax probabilities.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvbench.atomic import atomic_open
from cvbench.errors import BadImageError, UserError
from cvbench.methods import Method, key_params, method_variant, register_method
from cvbench.paths import cache_dir
from cvbench.split import Split, carve_validation

from .augment import apply_augment, parse_augment, parse_normalize
from .device import device_name, set_threads
from .engine import ImageStore, TrainConfig, TrainData, Trainer, TrainHooks, count_parameters

DEFAULT_IMAGE_SIZE = 224  # for path-based splits when neither the method nor the model says


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

    Extension hooks (other tasks subclass this class; see `with_params` for new defaults):
      class_weight="balanced":  loss weights n / (k * count_c), inverse class frequency
      sampling="balanced":      each epoch draws n items with replacement, p ~ 1/count(class)
      sampling="balanced:KEY":  the same over split.groups[KEY] (e.g. race) instead of labels
      aux_targets="gender:2,age:9": extra heads on the same model (outputs = n_classes + 2 +
          9); targets are split.groups[KEY] mapped through split.meta[f"{KEY}_classes"] (else
          sorted unique values); loss = sum of the heads' cross-entropies; predict_scores
          sets self.aux_scores_ = {"gender": (n, 2) probs, "age": (n, 9) probs}
      Overridable methods: build_model(n_outputs), targets(split), compute_loss(outputs,
      targets), scores_from_outputs(outputs), augment_batch(x_uint8, generator),
      preprocess(x_uint8), pixels(split); embed(split) -> (n, D) features via
      model.forward_features (retrieval).
    """

    default_model = "resnet-small"

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
        for key, classes in self.aux_heads_:
            if key not in split.groups:
                raise UserError(f"aux_targets names group {key!r}, but {split.name} has groups {sorted(split.groups)}")
            lookup = {str(c): i for i, c in enumerate(classes)}
            cols.append(torch.as_tensor([lookup.get(str(v), -100) for v in split.groups[key]], dtype=torch.int64))
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

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a (B, C, H, W) uint8 batch on the device (override to add e.g. occlusion)."""
        return apply_augment(x, self.augment_spec_, generator)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float."""
        mean, std = self._norm_tensors(x.device)
        return (x.float() - mean) / std

    def pixels(self, split: Split) -> np.ndarray:
        """The split as uint8 (N, S, S, 3) at this method's image size (decoded once, cached)."""
        size = getattr(self, "image_size_", None) or self._image_size(split)
        if split.in_memory:
            return _resize_rgb(_as_rgb(split.items), size)
        return _decoded_cache(split, size, self.n_jobs)

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

    def fit(self, split: Split) -> DeepClassifier:
        """Train on `split` (minus a carved validation part when val_fraction > 0)."""
        t_start = time.perf_counter()
        set_threads(self.n_jobs)
        self._validate()
        torch.manual_seed(int(self.seed))
        self.classes_ = split.classes
        self.n_classes_ = split.n_classes
        train, val = split, None
        if self.val_fraction and self.val_fraction > 0:
            group = self.val_group or split.meta.get("val_group_key")
            train, val = carve_validation(split, float(self.val_fraction), seed=int(self.seed), group_key=group)
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

    def predict_scores(self, split: Split) -> np.ndarray:
        """(n, n_classes) softmax probabilities; aux heads go to self.aux_scores_."""
        self._check_fitted()
        outputs = self.trainer_.predict_outputs(self.pixels(split))
        if len(outputs) == 0:
            return np.zeros((0, self.n_classes_))
        scores = self.scores_from_outputs(outputs).numpy().astype(np.float64)
        if self.aux_heads_:
            self.aux_scores_ = {}
            offset = self.n_classes_
            for key, classes in self.aux_heads_:
                logits = outputs[:, offset:offset + len(classes)]
                self.aux_scores_[key] = torch.softmax(logits, dim=1).numpy().astype(np.float64)
                offset += len(classes)
        return scores

    # ------------------------------------------------------------------ internals

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(split) first")

    def _validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= float(self.val_fraction) < 1:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.class_weight not in (None, "balanced"):
            raise UserError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        if self.sampling is not None and not str(self.sampling).startswith("balanced"):
            raise UserError(f"sampling must be None, 'balanced' or 'balanced:<group key>', got {self.sampling!r}")
        if self.early_stopping and not self.val_fraction:
            raise UserError("early_stopping needs a validation split: set val_fraction > 0 (e.g. 0.1)")
        parse_normalize(self.normalize)

    def _image_size(self, split: Split) -> int:
        if self.image_size:
            return int(self.image_size)
        if split.in_memory and split.items.ndim >= 3:
            return int(split.items.shape[1])
        size = _model_info(self.model).get("input_size") or DEFAULT_IMAGE_SIZE
        return int(size[-1] if isinstance(size, (tuple, list)) else size)

    def _aux_heads(self, train: Split) -> list[tuple[str, tuple[str, ...]]]:
        heads = []
        for part in filter(None, (p.strip() for p in str(self.aux_targets or "").split(","))):
            key, _, size = part.partition(":")
            key = key.strip()
            if key not in train.groups:
                raise UserError(f"aux_targets names group {key!r}, but {train.name} has groups {sorted(train.groups)}")
            classes = train.meta.get(f"{key}_classes")
            if classes is None:
                classes = sorted({str(v) for v in train.groups[key]})
            classes = tuple(str(c) for c in classes)
            if size.strip() and int(size) != len(classes):
                raise UserError(
                    f"aux_targets declares {key}:{size} but the data has {len(classes)} {key} classes {list(classes)}"
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
        ckpt = cache_dir("checkpoints") / f"{self._run_hash(split, val)}.pt"
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
            checkpoint_path=str(ckpt), resume=bool(self.resume),
            desc=getattr(self, "registered_name", type(self).__name__),
        )

    def run_key_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` without those that cannot change the trained weights: resume always,
        budget_clock when there is no time budget (for run keys and checkpoint names)."""
        params = {k: v for k, v in params.items() if k != "resume"}
        if not params.get("time_budget_s"):
            params.pop("budget_clock", None)
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
        try:
            from .models import count_parameters as zoo_count

            n_params = int(zoo_count(net))
        except ImportError:
            n_params = count_parameters(net)
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
    try:
        from .models import model_info

        info = model_info(name)
        return dict(info) if info else {}
    except Exception:  # unknown name or zoo not importable: fall back to defaults
        return {}


# ---------------------------------------------------------------------- pixels


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, H, W, 3): gray repeated, alpha dropped."""
    if arr.dtype != np.uint8:
        raise ValueError(f"in-memory images must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        return np.ascontiguousarray(arr[..., :3])
    return arr


def _resize_rgb(arr: np.ndarray, size: int) -> np.ndarray:
    if arr.shape[1:3] == (size, size):
        return arr
    import cv2

    interp = cv2.INTER_AREA if arr.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in arr])


def _decode_chunk(split: Split, idx: np.ndarray, size: int) -> tuple[np.ndarray, list[str]]:
    import cv2

    out = np.zeros((len(idx), size, size, 3), np.uint8)
    bad = []
    for j, i in enumerate(idx):
        try:
            img = split.image(int(i), mode="rgb")
        except BadImageError:
            if not split.meta.get("skip_bad"):
                raise
            bad.append(str(split.items[i]))
            continue
        interp = cv2.INTER_AREA if max(img.shape[:2]) > size else cv2.INTER_LINEAR
        out[j] = cv2.resize(img, (size, size), interpolation=interp)
    return out, bad


def decode_split(split: Split, size: int, n_jobs: int | None = None) -> np.ndarray:
    """Decode every image of a path-based split to uint8 (N, size, size, 3), in parallel."""
    from joblib import Parallel, delayed

    chunks = np.array_split(np.arange(len(split)), max(1, -(-len(split) // 256)))
    jobs = n_jobs if n_jobs and n_jobs > 0 else 1
    parts = Parallel(n_jobs=jobs)(delayed(_decode_chunk)(split, c, size) for c in chunks)
    return np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, size, size, 3), np.uint8)


def _decoded_cache(split: Split, size: int, n_jobs: int | None) -> np.ndarray:
    """Decoded pixels from cache_dir('pixels')/<fingerprint>-<size>.npy, decoding on a miss.

    Images are squashed to size x size (aspect not kept), as the studies did.
    """
    path = Path(cache_dir("pixels")) / f"{split.cache_key}-{size}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r" if path.stat().st_size > 2e9 else None)
            if arr.shape == (len(split), size, size, 3):
                return arr
        except (OSError, ValueError):
            pass
    arr = decode_split(split, size, n_jobs)
    with atomic_open(path, "wb") as f:
        np.save(f, arr)
    return arr


# ---------------------------------------------------------------------- variants


def with_params(base: type, name: str | None = None, doc: str | None = None, **defaults: Any) -> type:
    """A subclass of `base` whose __init__ has new defaults (and new params for unknown names).

    Lets a task define its method without retyping 30 parameters:
        class FairFaceNet(with_params(DeepClassifier, model="resnet34", aux_targets="gender,age")):
            ...
    New parameters are stored as attributes like the others (scikit-learn get_params sees them).
    """
    known = set(inspect.signature(base.__init__).parameters)
    return method_variant(base, name=name, doc=doc,
                          defaults={k: v for k, v in defaults.items() if k in known},
                          extra={k: v for k, v in defaults.items() if k not in known})


def register_variant(name: str, description: str, base: type = DeepClassifier, **defaults: Any) -> type:
    """Register a deep method `name` = `base` with new defaults (see with_params)."""
    cls_name = "".join(p.capitalize() for p in name.replace("_", "-").split("-")) + "Classifier"
    cls = with_params(base, name=cls_name, doc=f"{description}\n\n{base.__doc__ or ''}", **defaults)
    globals()[cls_name] = cls  # importable (and picklable) by name
    return register_method(name, family="deep", description=description)(cls)


register_method("cnn", family="deep", description="Any zoo model (param model=...) with the shared trainer")(DeepClassifier)

# Study A (mini project): SE-ResNet [4,4,3], SGD 0.1 / cosine / 200 epochs / clip 0.1 / wd 5e-4
register_variant(
    "resnet-se", "SE-ResNet [4,4,3] under 5M params (study A), shared trainer",
    model="resnet-se", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
    weight_decay=5e-4, schedule="cosine", grad_clip=0.1, grad_clip_mode="value", normalize="cifar10",
    augment="flip-crop",
)
# Study B (course homework): CIFAR ResNet-18 and myNet (Inception); hyper-parameters not stated in
# the study, so the common CIFAR recipe (SGD 0.1, momentum 0.9, wd 5e-4, cosine, 200 epochs).
register_variant(
    "resnet18-cifar", "CIFAR ResNet-18 (3x3 stem, no max-pool; study B), shared trainer",
    model="resnet18-cifar", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
    weight_decay=5e-4, schedule="cosine", normalize="cifar10", augment="flip-crop",
)
register_variant(
    "mynet", "myNet: GoogLeNet/Inception variant for 32x32 (study B), shared trainer",
    model="mynet", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
    weight_decay=5e-4, schedule="cosine", normalize="cifar10", augment="flip-crop",
)
# CPU-sized networks (our additions, not from the studies)
register_variant(
    "fastnet", "Fast airbench-style CIFAR net (~2M params at width 1; 0.5 by default for CPU budgets)",
    model="fastnet", width=0.5, epochs=16, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
    weight_decay=5e-4, schedule="onecycle", warmup_epochs=3, label_smoothing=0.1, normalize="cifar10",
    augment="flip-crop",
)
register_variant(
    "resnet-small", "Narrow CIFAR ResNet (param width) for CPU budgets",
    model="resnet-small", width=0.5, epochs=10, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
    nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup_epochs=2, label_smoothing=0.1,
    normalize="cifar10", augment="flip-crop",
)
