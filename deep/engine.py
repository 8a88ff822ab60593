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
- a checkpoint every epoch (atomic; model, optimizer, scaler, history, best weights) and
  `resume=True` to continue from it; checkpoints load with weights_only=True;
- a NaN/inf loss stops the run with `TrainingDivergedError` naming epoch and step;
- per-epoch train/val loss and accuracy (learning curves), early stopping on validation
  accuracy (patience; best weights restored), a time budget (wall seconds, or process CPU seconds with budget_clock="process",
  which a shared machine's load does not distort), tqdm per epoch;
- torchrun / DistributedDataParallel (deep/distributed.py): the global batch is split over
  the processes, rank 0 writes checkpoints.

What a task changes — loss, targets, augmentation, normalisation, how outputs become scores —
lives in a `TrainHooks` object (DeepClassifier is one), not in the loop.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cvbench.atomic import atomic_open
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


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
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
    """What a method customises in training; the defaults give plain softmax classification.

    preprocess(x_uint8) -> float input; augment_batch(x_uint8, generator) -> x_uint8;
    compute_loss(outputs, targets) -> scalar; scores_from_outputs(outputs) -> (B, n_classes).
    Optional: on_epoch_end(epoch, trainer), called after each epoch before its checkpoint (and
    replayed on resume when the checkpoint's optimizer has more param groups than a fresh one).
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


@dataclass
class TrainData:
    """One side of the training data: images, loss targets, and int labels for accuracy."""

    images: np.ndarray
    targets: torch.Tensor  # (N,) int64, or (N, k) for several heads, or float for regression
    labels: np.ndarray  # (N,) int64 class labels (accuracy)
    sample_weights: np.ndarray | None = None  # draw with replacement by these weights (train)


@dataclass
class TrainResult:
    """What a finished fit reports (all JSON-able through `as_info`)."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    steps: int = 0
    stop_reason: str = "completed"  # completed | early_stopping | time_budget | interrupted
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

    def as_info(self) -> dict[str, Any]:
        info = asdict(self)
        info["images_per_s"] = round(self.images_per_s, 1)
        info["train_s"] = round(self.train_s, 2)
        return info


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Train `model` with `config`, asking `hooks` for loss, augmentation and scores."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, hooks: TrainHooks | None = None,
                 on_epoch_end: Callable[[int, dict], None] | None = None):
        config.validate()
        self.config = config
        self.hooks = hooks or TrainHooks()
        self.on_epoch_end = on_epoch_end
        self.device = select_device(config.device)
        self.dist = dist_utils.init_distributed(self.device)
        self.amp_dtype = amp_dtype(self.device, config.amp)
        self.channels_last = use_channels_last(self.device, config.channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(self.device, self.amp_dtype) else None
        self.train_model = dist_utils.wrap_model(self.model, self.dist, self.device)
        if config.compile:
            self.train_model = torch.compile(self.train_model)

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
        return sys.stderr.isatty() and self.dist.is_main

    # -- checkpoints -----------------------------------------------------------------------

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        path = self.config.checkpoint_path
        if not path or not self.dist.is_main:
            return
        with atomic_open(path, "wb") as f:
            torch.save(state, f)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.config.checkpoint_path
        if not (self.config.resume and path and Path(path).is_file()):
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or from an incompatible version: say which file
            raise UserError(f"cannot resume from checkpoint {path}: {exc}; delete it to start over") from None
        self.model.load_state_dict(state["model"])
        hook = getattr(self.hooks, "on_epoch_end", None)
        if hook is not None and len(state["optimizer"]["param_groups"]) != len(self.optimizer.param_groups):
            for e in range(int(state["epoch"]) + 1):  # replay e.g. unfreezing that added param groups
                hook(e, self)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return state

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
        """Train for config.epochs (or until early stopping / the time budget); return the record."""
        cfg = self.config
        store = ImageStore(train.images, self.device)
        val_store = ImageStore(val.images, self.device) if val is not None and len(val.labels) else None
        targets = train.targets.to(self.device)
        labels = torch.as_tensor(train.labels, dtype=torch.int64, device=self.device)
        n = len(store)
        world, rank = self.dist.world_size, self.dist.rank
        per_rank_bs = max(1, cfg.batch_size // world)
        shard_len = -(-n // world)
        steps_per_epoch = max(1, -(-shard_len // per_rank_bs))
        if shard_len % per_rank_bs == 1 and steps_per_epoch > 1:
            steps_per_epoch -= 1  # a batch of one breaks batch norm: drop it
        total_steps = steps_per_epoch * cfg.epochs
        warm = min(cfg.warmup_epochs, cfg.epochs) / cfg.epochs  # a quick 1-epoch run keeps its warm-up
        check_every = 1 if self.device.type == "cpu" else 25
        budget_schedule = cfg.time_budget_s is not None and world == 1
        weights = None
        if train.sample_weights is not None:
            weights = torch.as_tensor(train.sample_weights, dtype=torch.float64)

        result = TrainResult(
            amp=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            channels_last=self.channels_last, compiled=bool(cfg.compile), world_size=world,
            device=str(self.device),
        )
        hist: dict[str, list[float]] = {k: [] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s")}
        start_epoch, elapsed_before, wall_before = 0, 0.0, 0.0
        best_acc, best_state, best_epoch = -1.0, None, None
        finished = False
        state = self._load_checkpoint()
        if state is not None:
            start_epoch = int(state["epoch"]) + 1
            elapsed_before = float(state["elapsed"])
            wall_before = float(state.get("wall", elapsed_before))
            hist = {k: list(v) for k, v in state["history"].items()}
            best_acc = float(state.get("best_acc", -1.0))
            best_state = state.get("best_state") or None
            best_epoch = state.get("best_epoch")
            finished = bool(state.get("finished", False))
            result.stop_reason = str(state.get("stop_reason", "completed"))
            result.steps = int(state.get("steps", 0))
            result.images_seen = int(state.get("images_seen", 0))
            result.resumed_from_epoch = start_epoch

        clock = time.process_time if cfg.budget_clock == "process" else time.perf_counter
        t0, c0 = time.perf_counter(), clock()
        for epoch in range(start_epoch, cfg.epochs):
            if finished:
                break
            torch.manual_seed(epoch_seed(cfg.seed, epoch, 1))  # dropout & other model randomness
            order_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0))
            aug_gen = torch.Generator(device=self.device).manual_seed(epoch_seed(cfg.seed, epoch, 2))
            if weights is None:
                order = torch.randperm(n, generator=order_gen)
            else:
                order = torch.multinomial(weights, n, replacement=True, generator=order_gen)
            order = dist_utils.shard_indices(order, rank, world)
            self.train_model.train()
            losses = torch.zeros(steps_per_epoch, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            seen = 0
            bar = tqdm(total=steps_per_epoch, desc=f"{cfg.desc} epoch {epoch + 1}/{cfg.epochs}",
                       leave=False, disable=not self._show_progress(), file=sys.stderr)
            stop_budget = False
            lr_now = cfg.lr
            step_in_epoch = 0
            for step_in_epoch in range(steps_per_epoch):
                idx = order[step_in_epoch * per_rank_bs:(step_in_epoch + 1) * per_rank_bs]
                gstep = epoch * steps_per_epoch + step_in_epoch
                progress = gstep / total_steps
                elapsed = elapsed_before + clock() - c0
                if budget_schedule:
                    progress = max(progress, elapsed / cfg.time_budget_s)
                lr_now = cfg.lr * lr_factor(cfg.schedule, progress, warm)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_now
                x = self.hooks.augment_batch(store.batch(idx), aug_gen)
                x = self._inputs(x)
                idx_dev = idx.to(self.device)
                with self._autocast():
                    outputs = self.train_model(x)
                    loss = self.hooks.compute_loss(outputs, targets[idx_dev])
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
                losses[step_in_epoch] = loss.detach().float()
                with torch.no_grad():
                    pred = self.hooks.scores_from_outputs(outputs.detach()).argmax(1)
                    correct += (pred == labels[idx_dev]).sum()
                seen += len(idx)
                if (step_in_epoch + 1) % check_every == 0 or step_in_epoch + 1 == steps_per_epoch:
                    self._check_finite(losses[: step_in_epoch + 1], epoch, step_in_epoch, lr_now)
                if bar.disable is False and step_in_epoch % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr_now:.3g}")
                bar.update(1)
                if (cfg.time_budget_s is not None and world == 1
                        and elapsed_before + clock() - c0 >= cfg.time_budget_s):
                    stop_budget = True
                    break
            bar.close()
            steps_done = step_in_epoch + 1
            self._check_finite(losses[:steps_done], epoch, steps_done - 1, lr_now)
            stats = torch.stack([losses[:steps_done].sum(), correct.float(),
                                 torch.tensor(float(seen), device=self.device),
                                 torch.tensor(float(steps_done), device=self.device)])
            dist_utils.all_reduce_sum(stats)
            train_loss = float(stats[0] / stats[3])
            train_acc = float(stats[1] / stats[2])
            result.steps += steps_done
            result.images_seen += int(stats[2])
            val_loss, val_acc = (float("nan"), float("nan"))
            if val_store is not None:
                val_loss, val_acc = self.evaluate(val_store, val)
            elapsed = elapsed_before + clock() - c0
            wall = wall_before + time.perf_counter() - t0
            for key, value in (("epoch", epoch + 1), ("train_loss", train_loss), ("train_acc", train_acc),
                               ("val_loss", val_loss), ("val_acc", val_acc), ("lr", lr_now),
                               ("time_s", round(wall, 2))):
                hist[key].append(value)
            if val_store is not None and cfg.early_stopping and val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch + 1
                best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            if cfg.time_budget_s is not None and world > 1:
                stop_budget = bool(dist_utils.broadcast_object(elapsed >= cfg.time_budget_s))
            stop_early = bool(val_store is not None and cfg.early_stopping and best_epoch is not None
                              and epoch + 1 - best_epoch >= cfg.early_stopping)
            hook = getattr(self.hooks, "on_epoch_end", None)
            if hook is not None:
                hook(epoch, self)  # e.g. unfreeze a body: trainer.optimizer.add_param_group(...)
            if stop_budget:
                result.stop_reason, finished = "time_budget", True
            elif stop_early:
                result.stop_reason, finished = "early_stopping", True
            self._save_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "epoch": epoch, "elapsed": elapsed, "wall": wall, "history": hist, "best_acc": best_acc,
                "best_state": best_state or {}, "best_epoch": best_epoch, "finished": finished,
                "stop_reason": result.stop_reason, "steps": result.steps,
                "images_seen": result.images_seen, "config": _plain_config(cfg),
            })
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, hist)
            if finished:
                break

        result.train_s = wall_before + time.perf_counter() - t0
        result.budget_used_s = round(elapsed_before + clock() - c0, 2)
        result.budget_clock = cfg.budget_clock
        result.curves = hist
        result.epochs_run = len(hist["epoch"])
        if cfg.early_stopping and best_state:
            self.model.load_state_dict(best_state)
            result.best_epoch = best_epoch
        dist_utils.barrier()
        return result

    def _check_finite(self, losses: torch.Tensor, epoch: int, step: int, lr: float) -> None:
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


def clone_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy (used by tests and benchmarks to start two runs from the same weights)."""
    return copy.deepcopy(model)
