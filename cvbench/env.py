"""Facts a record carries about where it ran: device, library versions, git revision."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys

from .paths import repo_root

_LIBS = ("numpy", "scipy", "scikit-learn", "opencv-contrib-python-headless", "torch",
         "torchvision", "cyvlfeat", "faiss-cpu", "joblib")


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cvbench": _version("cvbench")}
    for lib in _LIBS:
        v = _version(lib)
        if v:
            out[lib] = v
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.cache
def git_revision() -> str:
    """HEAD of the source checkout, with '+dirty' when tracked files other than the committed
    leaderboard (records and pages: the outputs of runs, not their code) have changes."""
    root = repo_root()
    wait = 120  # a guard against a hung git, not a deadline: on a busy machine `git status` is slow
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=wait).stdout.strip()
        if not rev:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)leaderboard"], cwd=root,
                               capture_output=True, text=True, timeout=wait).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: only rank 0 writes records and pages."""
    return int(os.environ.get("RANK", "0")) == 0


def load_average() -> float | None:
    """1-minute load average: timings taken while other work shares the cores are slower."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible (then 'mps'), else 'cpu'; others pass through."""
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        from .errors import UserError

        raise UserError(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    if device != "auto":
        return device
    if "torch" not in sys.modules:
        if not _may_have_accelerator():  # no GPU driver: "cpu" without importing torch (~2 s)
            return "cpu"
        try:
            import torch  # noqa: F401
        except ImportError:
            return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _may_have_accelerator() -> bool:
    """Whether torch could find a GPU here: an NVIDIA or ROCm driver, or Apple silicon (MPS)."""
    from pathlib import Path

    return (sys.platform == "darwin" or Path("/proc/driver/nvidia").exists()
            or any(Path("/dev").glob("nvidia*")) or Path("/dev/kfd").exists())


def check_device(device: str) -> None:
    """A GPU named with --device is one this machine has (UserError otherwise), so a deep run
    fails before its data is decoded, not in its fit."""
    if not (device.startswith("cuda") or device == "mps"):
        return
    import torch

    if device == "mps":
        backend = getattr(torch.backends, "mps", None)
        ok, what = backend is not None and backend.is_available(), "Apple MPS"
    else:
        _, _, index = device.partition(":")
        ok = torch.cuda.is_available() and (not index or (index.isdigit() and int(index) < torch.cuda.device_count()))
        what = f"CUDA device {index}" if index else "CUDA"
    if not ok:
        from .errors import UserError

        raise UserError(f"--device {device}: {what} is not available on this machine; "
                        f"use --device cpu or --device auto")


def device_info(device: str) -> dict[str, object]:
    """What the record says about the hardware the run used."""
    info: dict[str, object] = {"type": device.split(":")[0], "cpu": cpu_name(),
                               "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and "torch" in sys.modules:
        import torch

        idx = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_count"] = torch.cuda.device_count()
    info["name"] = info.get("gpu") or f"CPU ({info['cpu_count']} cores)"
    return info
