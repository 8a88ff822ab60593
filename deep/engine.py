"""The training engine shared by every deep method: one loop, many knobs, honest records.

`Trainer(model, config, hooks).fit(train, val)` trains a torch model on images held as a
uint8 array (N, H, W, C) — on the device when they fit (small images, like airbench), else
on the host and moved per batch — with:

- optimizers SGD (momentum, Nesterov) / Adam / AdamW, weight decay, gradient clipping;
- schedules "cosine", "onecycle", "step" (x0.1 at 1/2 and 3/4), "linear", "constant", with
  linear warm-up; the learning rate is a pure function of training progress, so resuming
  needs no scheduler state. Under a time budget, progress = max(step fraction, time
  fraction): the schedule anneals to its end when the budget runs out;
- mixed precision (bf16/fp16 autocast, GradScaler for fp16; see deep/device.py),
  channels_last, optional torch.compile;
- determinism: epoch e draws its order and augmentation from generators seeded by
  (seed, e), so the same seed on the same device gives the same weights, and a resumed run
  equals an uninterrupted one;
- torchrun / DistributedDataParallel (deep/distributed.py): the global batch is split over
  the processes;
- a NaN/inf loss stops the run with `TrainingDivergedError` naming epoch and step.

`Trainer.fit` is a plain loop (epochs of steps, then validation) over a mutable `FitState`;
everything around it is a `Callback` with hooks on_fit_start / on_epoch_start / on_step_end /
on_epoch_end / on_fit_end and a state_dict for the checkpoint. The built-in ones, added from
the config: `History` (per-epoch train/val loss and accuracy, lr, time: the learning curves),
`ProgressBar` (tqdm per epoch), `TimeBudget` (wall seconds, or process CPU seconds with
budget_clock="process", which a shared machine's load does not distort), `EarlyStopping`
(patience on validation accuracy; best weights restored), `SyncStop` (under DDP, every rank
takes rank 0's stop decision) and `Checkpoint` (every epoch, atomic, rank 0 only: model,
optimizer, scaler, loop and callback states; `resume=True` continues from it; it loads with
weights_only=True).

What a task changes in the maths — loss, targets, augmentation, normalisation, how outputs
become scores — lives in a `TrainHooks` object (DeepClassifier is one), not in the loop; its
callbacks() adds the method's own callbacks (e.g. unfreezing a frozen body).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvbench import progress
from cvbench.atomic import atomic_open
from cvbench.cache import note
from cvbench.errors import UserError

from . import distributed as dist_utils
from .device import amp_dtype, needs_grad_scaler, select_device, use_channels_last

SCHEDULES = ("cosine", "onecycle", "step", "linear", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")


class TrainingDivergedError(UserError):
    """The training loss became NaN or infinite; the message names epoch, step and lr."""


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything the loop needs besides the model, data and hooks (plain values only)."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # more than `epochs` means warm-up over the whole run
    grad_clip: float | None = None
    grad_clip_mode: str = "norm"  # "norm" (clip_grad_norm_) or "value" (clip_grad_value_)
    amp: Any = "auto"
    channels_last: Any = "auto"
    compile: bool = False
    time_budget_s: float | None = None
    budget_clock: str = "wall"  # "wall" seconds, or "process" CPU seconds (fair on a shared CPU)
    early_stopping: int = 0  # patience in epochs without a better val accuracy; 0 = off
    seed: int = 0
    device: str | None = "auto"
    checkpoint_path: str | None = None
    resume: bool = False
    progress: bool | None = None  # tqdm bars; None = only when stderr is a terminal
    desc: str = "train"

    def validate(self) -> None:
        """Reject bad values with one sentence naming the parameter."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if self.grad_clip_mode not in ("norm", "value"):
            raise UserError(f"grad_clip_mode must be 'norm' or 'value', not {self.grad_clip_mode!r}")
        if int(self.epochs) < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            raise UserError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.budget_clock not in ("wall", "process"):
            raise UserError(f"budget_clock must be 'wall' or 'process', not {self.budget_clock!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise UserError(f"time_budget_s must be > 0 seconds or None, got {self.time_budget_s}")


def lr_factor(schedule: str, progress: float, warmup_fraction: float = 0.0) -> float:
    """Multiplier of the base lr at `progress` in [0, 1] of training.

    Linear warm-up from ~0 over the first `warmup_fraction`, then the schedule over the rest.
    "onecycle" ramps from lr/25 to lr over its warm-up (default 30%) and anneals (cosine) to
    lr/25e4, as torch's OneCycleLR does.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        pct = warmup_fraction if warmup_fraction > 0 else 0.3
        start, end = 1 / 25, 1 / 25e4
        if p < pct:
            return start + (1 - start) * p / pct
        q = (p - pct) / max(1e-12, 1 - pct)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * q))
    if warmup_fraction > 0 and p < warmup_fraction:
        return max(p / warmup_fraction, 1e-3)
    q = (p - warmup_fraction) / max(1e-12, 1 - warmup_fraction) if warmup_fraction > 0 else p
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * q))
    if schedule == "linear":
        return max(1 - q, 0.0)
    if schedule == "step":
        return 0.01 if q >= 0.75 else 0.1 if q >= 0.5 else 1.0
    if schedule == "constant":
        return 1.0
    raise UserError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def build_optimizer(model: torch.nn.Module, config: TrainConfig,
                    groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters, or over `groups`
    (torch param groups; a group's "lr_scale" multiplies the schedule's lr for it, e.g. a
    lower lr for a pretrained body than for its new head)."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if groups is not None:
        params = [{"lr_scale": 1.0, **g, "params": [p for p in g["params"] if p.requires_grad]}
                  for g in groups]
        params = [g for g in params if g["params"]]
        if not params:
            raise UserError("no trainable parameters: every parameter group is frozen")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=bool(config.nesterov and config.momentum > 0),
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct 63-bit seed per (run seed, epoch, stream), stable across processes."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- data & hooks


class ImageStore:
    """Uint8 images (N, H, W[, C]) served as (B, C, H, W) uint8 batches on the device.

    The whole array moves to the device once when it is small enough (always on CPU, where a
    torch view of the numpy array costs nothing; on a GPU when under `max_device_bytes`);
    otherwise batches are gathered on the host and copied (pinned) per step.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, device: torch.device, max_device_bytes: float = 4e9):
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W[, C]), got shape {images.shape}")
        self.device = device
        self.host = images
        self.shape = images.shape
        in_ram = not isinstance(images, np.memmap)
        self.resident: torch.Tensor | None = None
        if device.type == "cpu" and in_ram:
            self.resident = torch.from_numpy(np.ascontiguousarray(images))
        elif device.type != "cpu" and images.nbytes <= max_device_bytes:
            self.resident = torch.from_numpy(np.ascontiguousarray(images)).to(device)

    def __len__(self) -> int:
        return self.shape[0]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Images idx as a (B, C, H, W) uint8 tensor on the device (a channels-last view)."""
        if self.resident is not None:
            out = self.resident[idx.to(self.resident.device)]
        else:
            host = torch.from_numpy(self.host[idx.cpu().numpy()])
            if self.device.type == "cuda":
                host = host.pin_memory()
            out = host.to(self.device, non_blocking=True)
        return out.permute(0, 3, 1, 2)


class TrainHooks:
    """What a method changes in the maths; the defaults give plain softmax classification.

    preprocess(x_uint8) -> float input; augment_batch(x_uint8, generator) -> x_uint8;
    compute_loss(outputs, targets) -> scalar; scores_from_outputs(outputs) -> (B, n_classes);
    param_groups(model) -> optimizer param groups with their lr_scale (None: one group).
    Behaviour around the loop (e.g. unfreezing a body after some epochs) is a `Callback`:
    callbacks() returns the method's own, which the Trainer runs with its built-in ones.
    """

    label_smoothing: float = 0.0

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0)

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)

    def scores_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=1)

    def callbacks(self) -> list[Callback]:
        return []

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]] | None:
        """Optimizer param groups (dicts with "params" and optionally "lr_scale"); None:
        one group of every trainable parameter."""
        return None


@dataclass
class TrainData:
    """One side of the training data: images, loss targets, and int labels for accuracy."""

    images: np.ndarray
    targets: torch.Tensor  # (N,) int64, or (N, k) for several heads, or float for regression
    labels: np.ndarray  # (N,) int64 class labels (accuracy)
    sample_weights: np.ndarray | None = None  # draw with replacement by these weights (train)


@dataclass
class TrainResult:
    """What a finished fit reports."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    steps: int = 0
    stop_reason: str = "completed"  # completed | early_stopping | time_budget | a callback's own
    best_epoch: int | None = None
    train_s: float = 0.0
    images_seen: int = 0
    resumed_from_epoch: int | None = None
    amp: str = "fp32"
    channels_last: bool = False
    compiled: bool = False
    world_size: int = 1
    device: str = "cpu"
    budget_clock: str = "wall"
    budget_used_s: float = 0.0  # seconds on the budget clock

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_s if self.train_s > 0 else 0.0


# --------------------------------------------------------------------------- loop state & callbacks

CURVES = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s")


@dataclass(eq=False)
class FitState:
    """The loop's mutable state, shared with the callbacks.

    During an epoch, `epoch` is its 0-based index, `step` the step within it, and `lr` and
    `loss` the last step's (`loss` is a device tensor: float() on it waits for the device).
    At the end of an epoch, `metrics` holds its train/val loss and accuracy and its last lr,
    and `elapsed` / `wall` the seconds used so far on the budget clock / the wall clock
    (resumed runs included). A callback ends the run with `request_stop(reason)`: the first
    reason wins, and a stop asked for during an epoch ends that epoch after the current step.
    """

    epochs: int
    steps_per_epoch: int
    clock: Callable[[], float] = time.perf_counter  # the budget clock
    epoch: int = 0
    step: int = 0
    steps: int = 0
    images_seen: int = 0
    lr: float = 0.0
    loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CURVES})
    elapsed: float = 0.0
    wall: float = 0.0
    stop_reason: str | None = None
    best_epoch: int | None = None
    resumed_from_epoch: int | None = None
    _start: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0), init=False, repr=False)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def start_clocks(self) -> None:
        """Count on from `elapsed` / `wall` (zero, or what a checkpoint restored)."""
        self._start = (self.elapsed, self.clock(), self.wall, time.perf_counter())

    def budget_elapsed(self) -> float:
        """Seconds on the budget clock now, including those before a resume."""
        return self._start[0] + self.clock() - self._start[1]

    def wall_elapsed(self) -> float:
        return self._start[2] + time.perf_counter() - self._start[3]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint taken at the end of epoch `epoch` keeps of the loop."""
        return {"epoch": self.epoch, "elapsed": self.elapsed, "wall": self.wall, "history": self.history,
                "finished": self.stop_reason is not None, "stop_reason": self.stop_reason or "completed",
                "steps": self.steps, "images_seen": self.images_seen}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue after the checkpoint's epoch (call before start_clocks)."""
        self.epoch = int(saved["epoch"]) + 1
        self.elapsed = float(saved["elapsed"])
        self.wall = float(saved.get("wall", self.elapsed))
        self.history = {k: list(v) for k, v in saved["history"].items()}
        self.stop_reason = str(saved["stop_reason"]) if saved.get("finished") else None
        self.steps = int(saved.get("steps", 0))
        self.images_seen = int(saved.get("images_seen", 0))


class Callback:
    """Behaviour around the training loop; every hook is a no-op here.

    Hooks get the Trainer and the FitState and may change either (state.request_stop ends the
    run). on_step_start runs before every optimizer step, after the schedule set the step's lr
    (a callback may set another: state.lr and the optimizer's groups); on_step_end runs after
    it. Keep both cheap (the loop calls them only on callbacks that override them). What must survive a resume goes in state_dict() (plain values
    and tensors; {} = nothing), saved under `key` in the checkpoint; load_state_dict(saved,
    trainer) restores it after the model's weights and before the optimizer's state, so a
    callback that added optimizer param groups can add them again.
    """

    @property
    def key(self) -> str:
        """Its entry in the checkpoint: the class name (override it to run two of one class)."""
        return type(self).__name__

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None: ...

    def on_epoch_start(self, trainer: Trainer, state: FitState) -> None: ...

    def on_step_start(self, trainer: Trainer, state: FitState) -> None: ...

    def on_step_end(self, trainer: Trainer, state: FitState) -> None: ...

    def on_epoch_end(self, trainer: Trainer, state: FitState) -> None: ...

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any], trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, with the loss and lr every `every` steps."""

    def __init__(self, desc: str = "train", every: int = 10):
        self.desc, self.every, self.bar = desc, every, None

    def on_epoch_start(self, trainer, state):
        desc = f"{self.desc} epoch {state.epoch + 1}/{state.epochs}"
        self.bar = progress.bar(state.steps_per_epoch, desc, unit="step", force=True)

    def on_step_end(self, trainer, state):
        if state.step % self.every == 0:
            self.bar.set_postfix(loss=f"{float(state.loss.detach()):.3f}", lr=f"{state.lr:.3g}")
        self.bar.update(1)

    def on_epoch_end(self, trainer, state):
        self.bar.close()


class History(Callback):
    """The learning curves: one row per epoch appended to state.history (see CURVES)."""

    def on_epoch_end(self, trainer, state):
        row = {**state.metrics, "epoch": state.epoch + 1, "time_s": round(state.wall, 2)}
        for key in CURVES:
            state.history[key].append(row[key])


class TimeBudget(Callback):
    """Stop once `seconds` have passed on the budget clock: after the step that crosses it
    (`per_step`, one process), or at the end of the epoch that crossed it (DDP, where the
    ranks must agree: SyncStop gives them rank 0's decision)."""

    def __init__(self, seconds: float, per_step: bool = True):
        self.seconds, self.per_step = float(seconds), per_step

    def on_step_end(self, trainer, state):
        if self.per_step and state.budget_elapsed() >= self.seconds:
            state.request_stop("time_budget")

    def on_epoch_end(self, trainer, state):
        if not self.per_step and state.elapsed >= self.seconds:
            state.request_stop("time_budget")


class LRRangeTest(Callback):
    """The learning-rate range test (the retinopathy study's "effective learning rate
    identification"; Smith 2017, fastai's lr_find): over at most `steps` steps of one pass, the
    lr grows exponentially from `lr_min` to `lr_max` while the training loss is recorded; the
    run stops once the smoothed loss exceeds `diverge` times its best. `result()` gives the
    curve and the suggested lr: a tenth of the lr at the smoothed loss's minimum."""

    def __init__(self, lr_min: float = 1e-6, lr_max: float = 1.0, steps: int | None = None,
                 diverge: float = 4.0, beta: float = 0.9):
        if not 0 < lr_min < lr_max:
            raise UserError(f"the lr range must satisfy 0 < lr_min < lr_max, got {lr_min} and {lr_max}")
        self.lr_min, self.lr_max, self.steps = float(lr_min), float(lr_max), steps
        self.diverge, self.beta = float(diverge), float(beta)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped = "completed"

    def on_fit_start(self, trainer, state):
        self.n = max(2, min(self.steps or state.steps_per_epoch, state.steps_per_epoch))

    def on_step_start(self, trainer, state):
        i = len(self.lrs)
        state.lr = self.lr_min * (self.lr_max / self.lr_min) ** (i / (self.n - 1))

    def on_step_end(self, trainer, state):
        loss = float(state.loss.detach())
        self.lrs.append(state.lr)
        self.losses.append(loss)
        self._raw = self.beta * getattr(self, "_raw", 0.0) + (1 - self.beta) * loss  # debiased EMA
        self.smoothed.append(self._raw / (1 - self.beta ** len(self.losses)))
        if not math.isfinite(loss) or self.smoothed[-1] > self.diverge * min(self.smoothed):
            self.stopped = "diverged"
            state.request_stop("lr range test: the loss diverged")
        elif len(self.lrs) >= self.n:
            state.request_stop("lr range test: range done")

    def result(self) -> dict[str, Any]:
        """{"lr", "loss", "smoothed", "suggested_lr", "min_loss_lr", "steps", "stopped"}."""
        if not self.lrs:
            return {"lr": [], "loss": [], "smoothed": [], "suggested_lr": None, "min_loss_lr": None,
                    "steps": 0, "stopped": self.stopped}
        best = int(np.argmin(self.smoothed))
        return {"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed,
                "min_loss_lr": self.lrs[best], "suggested_lr": self.lrs[best] / 10,
                "steps": len(self.lrs), "stopped": self.stopped}


class EarlyStopping(Callback):
    """Stop after `patience` epochs without a better validation accuracy; the best epoch's
    weights are restored at the end (state.best_epoch). Without validation (val_acc NaN)
    nothing is ever better, so it never stops."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best_acc, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, trainer, state):
        if state.metrics["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch = state.metrics["val_acc"], state.epoch + 1
            self.best_weights = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        if self.best_epoch is not None and state.epoch + 1 - self.best_epoch >= self.patience:
            state.request_stop("early_stopping")

    def on_fit_end(self, trainer, state):
        if self.best_weights:
            trainer.model.load_state_dict(self.best_weights)
            state.best_epoch = self.best_epoch

    def state_dict(self):
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "best_state": self.best_weights or {}}

    def load_state_dict(self, saved, trainer):
        self.best_acc, self.best_epoch = float(saved["best_acc"]), saved["best_epoch"]
        self.best_weights = saved["best_state"] or None


class SyncStop(Callback):
    """Under DDP, every rank takes rank 0's stop decision at the end of an epoch, so all ranks
    run the same epochs (goes after the callbacks that may stop the run)."""

    def on_epoch_end(self, trainer, state):
        state.stop_reason = dist_utils.broadcast_object(state.stop_reason)


class Checkpoint(Callback):
    """Write the run to `path` after every epoch (atomically, rank 0 only) and, with `resume`,
    continue from it: model, optimizer, GradScaler, the loop (FitState.state_dict) and every
    callback's state_dict. It loads with weights_only=True; a file that does not load, or
    does not fit this run, is a one-sentence UserError. Goes last: it saves what the other
    callbacks did at the end of the epoch."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path, self.resume = str(path), resume

    def on_fit_start(self, trainer, state):
        if self.resume and Path(self.path).is_file():
            self.restore(trainer, state)

    def on_epoch_end(self, trainer, state):
        if trainer.dist.is_main:
            with atomic_open(self.path, "wb") as f:
                torch.save(self.contents(trainer, state), f)

    def contents(self, trainer: Trainer, state: FitState) -> dict[str, Any]:
        callbacks = {cb.key: saved for cb in trainer.callbacks if (saved := cb.state_dict())}
        return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else {},
                **state.state_dict(), "callbacks": callbacks, "config": _plain_config(trainer.config)}

    def restore(self, trainer: Trainer, state: FitState) -> None:
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            trainer.model.load_state_dict(saved["model"])
            for cb in trainer.callbacks:  # before the optimizer: they may add param groups
                if cb.key in saved.get("callbacks", {}):
                    cb.load_state_dict(saved["callbacks"][cb.key], trainer)
            trainer.optimizer.load_state_dict(saved["optimizer"])
            if trainer.scaler is not None and saved.get("scaler"):
                trainer.scaler.load_state_dict(saved["scaler"])
            state.load_state_dict(saved)
        except UserError:
            raise
        except Exception as exc:  # corrupt, tampered, or from another model or version
            raise UserError(f"cannot resume from checkpoint {self.path}: not a valid checkpoint "
                            f"({_short_reason(exc)}); delete it to start over") from None
        state.resumed_from_epoch = state.epoch
        note("checkpoint", hit=True)


def _short_reason(exc: Exception) -> str:
    """Why a checkpoint did not load, in a few words (torch's own messages run to paragraphs)."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} entry"
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    text = str(exc)
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it holds a {found.group(1)} object, which a weights-only load refuses"
    if found := re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text):
        return f"unreadable data: {found.group(1).rstrip(' .')}"
    if found := re.match(r"Error\(s\) in loading state_dict for (\w+)", text):
        return f"its weights do not fit this {found.group(1)}"
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = line.split(". ")[0].rstrip(" .:") or type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."


# --------------------------------------------------------------------------- the trainer


class _Batches:
    """The training data on the device, and this rank's batches of each epoch."""

    def __init__(self, train: TrainData, val: TrainData | None, device: torch.device,
                 dist: dist_utils.DistInfo, batch_size: int):
        self.store = ImageStore(train.images, device)
        self.val = val
        self.val_store = ImageStore(val.images, device) if val is not None and len(val.labels) else None
        self.targets = train.targets.to(device)
        self.labels = torch.as_tensor(train.labels, dtype=torch.int64, device=device)
        self.weights = None
        if train.sample_weights is not None:
            self.weights = torch.as_tensor(train.sample_weights, dtype=torch.float64)
        self.rank, self.world = dist.rank, dist.world_size
        self.per_rank_bs = max(1, batch_size // self.world)
        shard_len = -(-len(self.store) // self.world)
        self.steps_per_epoch = max(1, -(-shard_len // self.per_rank_bs))
        if shard_len % self.per_rank_bs == 1 and self.steps_per_epoch > 1:
            self.steps_per_epoch -= 1  # a batch of one breaks batch norm: drop it

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """This rank's share of the epoch's order (a permutation, or weighted draws)."""
        n = len(self.store)
        if self.weights is None:
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return dist_utils.shard_indices(order, self.rank, self.world)


class Trainer:
    """Train `model` with `config`, asking `hooks` for loss, augmentation and scores.

    `callbacks` run in this order: ProgressBar (when shown), History, the method's own
    (hooks.callbacks()), those passed here, then from the config TimeBudget, EarlyStopping,
    SyncStop (DDP) and Checkpoint (last: it saves what the others did).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, hooks: TrainHooks | None = None,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()):
        config.validate()
        self.config = config
        self.hooks = hooks or TrainHooks()
        self.device = select_device(config.device)
        self.dist = dist_utils.init_distributed(self.device)
        self.amp_dtype = amp_dtype(self.device, config.amp)
        self.channels_last = use_channels_last(self.device, config.channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config, self.hooks.param_groups(self.model))
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(self.device, self.amp_dtype) else None
        self.train_model = dist_utils.wrap_model(self.model, self.dist, self.device)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self.callbacks = self._build_callbacks([*self.hooks.callbacks(), *callbacks])
        self._step_callbacks = [cb for cb in self.callbacks  # the hot path calls only these
                                if type(cb).on_step_end is not Callback.on_step_end]
        self._step_start_callbacks = [cb for cb in self.callbacks
                                      if type(cb).on_step_start is not Callback.on_step_start]

    def _build_callbacks(self, extra: list[Callback]) -> list[Callback]:
        cfg = self.config
        out: list[Callback] = [ProgressBar(cfg.desc)] if self._show_progress() else []
        out += [History(), *extra]
        if cfg.time_budget_s is not None:
            out.append(TimeBudget(cfg.time_budget_s, per_step=not self.dist.enabled))
        if cfg.early_stopping:
            out.append(EarlyStopping(cfg.early_stopping))
        if self.dist.enabled:
            out.append(SyncStop())
        if cfg.checkpoint_path:
            out.append(Checkpoint(cfg.checkpoint_path, resume=cfg.resume))
        keys = [cb.key for cb in out]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"two callbacks have the key {key!r} (their checkpoint entry); "
                                 "override `key` on one of them")
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _inputs(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = self.hooks.preprocess(x_uint8)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _show_progress(self) -> bool:
        if self.config.progress is not None:
            return bool(self.config.progress) and self.dist.is_main
        return progress.enabled() and self.dist.is_main

    def _call(self, hook: str, state: FitState) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, state)

    # -- evaluation ------------------------------------------------------------------------

    @torch.no_grad()
    def predict_outputs(self, images: np.ndarray | ImageStore) -> torch.Tensor:
        """Raw model outputs (N, n_outputs) as float32 on the CPU, in eval mode."""
        store = images if isinstance(images, ImageStore) else ImageStore(images, self.device)
        bs = self.config.eval_batch_size or max(self.config.batch_size, 256)
        self.model.eval()
        outs = []
        for start in range(0, len(store), bs):
            idx = torch.arange(start, min(start + bs, len(store)))
            with self._autocast():
                out = self.model(self._inputs(store.batch(idx)))
            outs.append(out.float().cpu())
        if not outs:
            return torch.zeros((0, 0))
        return torch.cat(outs)

    @torch.no_grad()
    def evaluate(self, store: ImageStore, data: TrainData) -> tuple[float, float]:
        """(mean loss, accuracy) of the current model on a held-out set."""
        outputs = self.predict_outputs(store).to(self.device)
        if len(outputs) == 0:
            return float("nan"), float("nan")
        loss = float(self.hooks.compute_loss(outputs, data.targets.to(self.device)))
        pred = self.hooks.scores_from_outputs(outputs).argmax(1).cpu().numpy()
        return loss, float((pred == data.labels).mean())

    # -- training --------------------------------------------------------------------------

    def fit(self, train: TrainData, val: TrainData | None = None) -> TrainResult:
        """Train for config.epochs, or until a callback stops the run; return the record."""
        cfg = self.config
        data = _Batches(train, val, self.device, self.dist, cfg.batch_size)
        clock = time.process_time if cfg.budget_clock == "process" else time.perf_counter
        state = FitState(cfg.epochs, data.steps_per_epoch, clock=clock)
        self._call("on_fit_start", state)
        state.start_clocks()
        while state.epoch < cfg.epochs and state.stop_reason is None:
            self._call("on_epoch_start", state)
            self._train_epoch(data, state)
            val_loss, val_acc = (float("nan"), float("nan"))
            if data.val_store is not None:
                val_loss, val_acc = self.evaluate(data.val_store, data.val)
            state.metrics.update(val_loss=val_loss, val_acc=val_acc)
            state.elapsed, state.wall = state.budget_elapsed(), state.wall_elapsed()
            self._call("on_epoch_end", state)
            state.epoch += 1
        state.elapsed, state.wall = state.budget_elapsed(), state.wall_elapsed()
        self._call("on_fit_end", state)
        dist_utils.barrier()
        return TrainResult(
            curves=state.history, epochs_run=len(state.history["epoch"]), steps=state.steps,
            stop_reason=state.stop_reason or "completed", best_epoch=state.best_epoch, train_s=state.wall,
            images_seen=state.images_seen, resumed_from_epoch=state.resumed_from_epoch,
            amp=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            channels_last=self.channels_last, compiled=bool(cfg.compile), world_size=self.dist.world_size,
            device=str(self.device), budget_clock=cfg.budget_clock, budget_used_s=round(state.elapsed, 2),
        )

    def _train_epoch(self, data: _Batches, state: FitState) -> None:
        """One pass over this rank's batches; leaves the train loss, accuracy and lr in state.metrics."""
        cfg, epoch, device = self.config, state.epoch, self.device
        torch.manual_seed(epoch_seed(cfg.seed, epoch, 1))  # dropout & other model randomness
        order = data.order(torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0)))
        aug_gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch, 2))
        self.train_model.train()
        n_steps, bs = data.steps_per_epoch, data.per_rank_bs
        losses = torch.zeros(n_steps, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        check_every = 1 if device.type == "cpu" else 25
        step_callbacks = self._step_callbacks
        for step in range(n_steps):
            idx = order[step * bs:(step + 1) * bs]
            state.lr = self._lr_at(epoch * n_steps + step, state)
            state.step = step
            for cb in self._step_start_callbacks:
                cb.on_step_start(self, state)
            for group in self.optimizer.param_groups:
                group["lr"] = state.lr * group.get("lr_scale", 1.0)
            x = self._inputs(self.hooks.augment_batch(data.store.batch(idx), aug_gen))
            idx_dev = idx.to(device)
            with self._autocast():
                outputs = self.train_model(x)
                loss = self.hooks.compute_loss(outputs, data.targets[idx_dev])
            self._backward_and_step(loss)
            losses[step] = loss.detach().float()
            with torch.no_grad():
                pred = self.hooks.scores_from_outputs(outputs.detach()).argmax(1)
                correct += (pred == data.labels[idx_dev]).sum()
            seen += len(idx)
            if (step + 1) % check_every == 0 or step + 1 == n_steps:
                self._check_finite(losses[: step + 1], epoch, state.lr)
            state.step, state.loss = step, loss
            for cb in step_callbacks:
                cb.on_step_end(self, state)
            if state.stop_reason is not None:
                break
        n_done = state.step + 1
        self._check_finite(losses[:n_done], epoch, state.lr)
        stats = torch.stack([losses[:n_done].sum(), correct.float(), torch.tensor(float(seen), device=device),
                             torch.tensor(float(n_done), device=device)])
        dist_utils.all_reduce_sum(stats)
        state.steps += n_done
        state.images_seen += int(stats[2])
        state.metrics = {"train_loss": float(stats[0] / stats[3]), "train_acc": float(stats[1] / stats[2]),
                         "lr": state.lr}

    def _lr_at(self, global_step: int, state: FitState) -> float:
        """The schedule's lr: progress is the step fraction, or under a time budget (one
        process) max(step fraction, time fraction), so the schedule ends with the budget."""
        cfg = self.config
        progress = global_step / (state.steps_per_epoch * cfg.epochs)
        if cfg.time_budget_s is not None and not self.dist.enabled:
            progress = max(progress, state.budget_elapsed() / cfg.time_budget_s)
        warm = min(cfg.warmup_epochs, cfg.epochs) / cfg.epochs  # a quick 1-epoch run keeps its warm-up
        return cfg.lr * lr_factor(cfg.schedule, progress, warm)

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward, optional gradient clipping, optimizer step (through the GradScaler for fp16)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            params = self.model.parameters()
            if cfg.grad_clip_mode == "value":
                torch.nn.utils.clip_grad_value_(params, cfg.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _check_finite(self, losses: torch.Tensor, epoch: int, lr: float) -> None:
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0, 0])
        value = float(losses[first])
        raise TrainingDivergedError(
            f"training diverged: the loss became {value} at epoch {epoch + 1}, step {first + 1} "
            f"(lr {lr:.3g}); lower the learning rate (e.g. lr={self.config.lr / 10:g}), add grad_clip, "
            "or turn mixed precision off (amp=False)"
        )


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in asdict(cfg).items()}


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters (used when deep.models has no counter of its own)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
