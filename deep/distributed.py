"""Multi-GPU / multi-node training through `torchrun` (DistributedDataParallel).

Launch any cvbench command under torchrun and the deep trainer spreads each batch over the
processes:

    torchrun --nproc_per_node=4 -m cvbench.cli suite cifar10          # one node, 4 GPUs
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 -m cvbench.cli ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR/PORT); `init_distributed` reads
them and joins the process group (NCCL on CUDA, gloo on CPU). The in-memory data path shards
each epoch's global permutation like DistributedSampler (padded to a multiple of the world
size, then rank::world_size), so `batch_size` stays the *global* batch size and the per-process
batch is batch_size // world_size. Gradients are averaged by DDP; only rank 0 writes
checkpoints and (through `is_main_process`) run records. Without torchrun everything here is a
no-op and training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank / world size / local rank from torchrun's environment variables."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0") or 0),
        world_size=int(os.environ.get("WORLD_SIZE", "1") or 1),
        local_rank=int(os.environ.get("LOCAL_RANK", "0") or 0),
    )


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent); return DistInfo.

    Backend: NCCL when the device is CUDA, gloo otherwise (CPU tests, CPU clusters).
    """
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed): the process that writes files and records."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_info().rank == 0


def shard_indices(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of a global index order, DistributedSampler style.

    The order is padded by wrapping around to a multiple of world_size, then every rank takes
    indices[rank::world_size]; all ranks get the same count, so they run the same step count.
    """
    if world_size <= 1:
        return indices
    n = len(indices)
    total = -(-n // world_size) * world_size
    if total > n:
        reps = -(-total // n)
        indices = indices.repeat(reps)[:total]
    return indices[rank:total:world_size]


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when distributed, else the model itself."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place; no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Rank src's Python object on every rank (e.g. a stop decision taken on rank 0)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
