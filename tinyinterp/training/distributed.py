"""torchrun support: process group set-up (gloo on CPU, nccl on GPU) and rank helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local)


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world
    return x


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_same(value: str, what: str, info: DistInfo) -> None:
    """Raise on every rank unless all ranks hold the same ``value`` (e.g. a tokenizer/data fingerprint)."""
    if not info.enabled:
        return
    from tinyinterp.errors import ConfigError

    values: list = [None] * info.world
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        bad = [r for r, v in enumerate(values) if v != values[0]]
        raise ConfigError(f"ranks {bad} see a different {what} than rank 0; on several machines put $TINYINTERP_CACHE "
                          "on a shared filesystem, or pass --tokenizer and the same --data files to every node")

