"""PyTorch distributed (torchrun / DDP) support.

A run started with ``torchrun --nproc_per_node N -m tcsa_uda train ...`` sees the environment
variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_distributed` then joins the
process group (NCCL on CUDA, Gloo on CPU), and the engine wraps the segmenter in
:class:`torch.nn.parallel.DistributedDataParallel`. Each rank samples its own shard of the
slices (a different loader seed per rank); only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank information; ``world_size == 1`` means a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if this process was started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (one all-reduce under torchrun), so all ranks stop together."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def check_in_sync(info: DistInfo, modules: list[torch.nn.Module], what: str) -> None:
    """Raise if the parameters of ``modules`` differ between ranks (DDP must keep them equal).

    Compares a float64 checksum of all parameters across ranks with an all-gather.
    """
    if not info.enabled:
        return
    params = [p.detach().double().sum() for m in modules for p in m.parameters()]
    local = torch.stack(params).sum().reshape(1) if params else torch.zeros(1, dtype=torch.float64)
    device = next((p.device for m in modules for p in m.parameters()), torch.device("cpu"))
    local = local.to(device)
    gathered = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    values = [float(g) for g in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"{what}: parameters differ between ranks (checksums {values}); DDP lost synchronisation.")
