"""Device selection and the mixed-precision / memory-format policy of the trainer.

One place decides where a run goes ("auto" -> CUDA, else Apple MPS, else CPU), which autocast
dtype it uses (bf16 where the hardware has it, fp16 + GradScaler on older GPUs, off on CPU
unless asked) and whether inputs use channels_last, so every deep method behaves alike.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from cvbench.errors import UserError

_AMP_ON = {"true", "1", "yes", "on"}
_AMP_OFF = {"false", "0", "no", "off", "none", "fp32"}


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a run: "auto"/None picks CUDA, else MPS, else CPU.

    Under torchrun on CUDA, "auto"/"cuda" means this process's GPU (LOCAL_RANK).
    An explicit device that is not available is a UserError naming it.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu "
                            f"or --device auto (or device = \"cpu\" in --set or a suite's params)")
        if name == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise UserError("device 'mps' requested but Apple MPS is not available here; use --device cpu "
                            "or --device auto (or device = \"cpu\" in --set or a suite's params)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown device {device!r}; expected --device auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def amp_dtype(device: torch.device, amp: Any = "auto") -> torch.dtype | None:
    """Autocast dtype for `amp` on `device`, or None for full fp32.

    "auto": bf16 on CUDA GPUs that support it, else fp16; off on CPU/MPS (bf16 on CPU is
    correct but usually slower than fp32). True: as auto, but bf16 on CPU too.
    "bf16"/"fp16": that dtype (fp16 only on CUDA). False: off.
    """
    key = str(amp).strip().lower()
    if key in _AMP_OFF:
        return None
    if key == "bf16":
        return torch.bfloat16
    if key == "fp16":
        if device.type != "cuda":
            raise UserError(f"amp='fp16' needs a CUDA device, not {device.type!r}; use amp='bf16' or False")
        return torch.float16
    if key not in _AMP_ON and key != "auto":
        raise UserError(f"unknown amp setting {amp!r}; expected 'auto', True, False, 'bf16' or 'fp16'")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if key == "auto":
        return None
    return torch.bfloat16 if device.type == "cpu" else None


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """fp16 autocast on CUDA needs loss scaling; bf16 and fp32 do not."""
    return device.type == "cuda" and dtype == torch.float16


def use_channels_last(device: torch.device, setting: Any = "auto") -> bool:
    """channels_last memory format: on by default for CUDA (tensor cores), off on CPU."""
    key = str(setting).strip().lower()
    if key == "auto":
        return device.type == "cuda"
    return key in _AMP_ON


def device_name(device: torch.device) -> str:
    """Human name of the device for records, e.g. 'NVIDIA H100 80GB HBM3' or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def set_threads(n_jobs: int | None) -> None:
    """Limit torch's intra-op CPU threads (n_jobs; None or <=0 keeps torch's default)."""
    if n_jobs is not None and n_jobs > 0:
        torch.set_num_threads(int(n_jobs))
