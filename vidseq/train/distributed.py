"""DistributedDataParallel support for the training engine (``torchrun --nproc_per_node=N -m vidseq train``).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when
``WORLD_SIZE > 1`` :func:`setup_distributed` joins the process group (``nccl`` on CUDA, ``gloo`` on
CPU). Without those variables everything here is a no-op for one process, so the engine has a single
code path.

Semantics the engine builds on these helpers:
  * the train set is sharded with ``DistributedSampler(seed=cfg.seed)``, reshuffled per epoch;
  * gradients are averaged by DDP, train loss is all-reduced (sample-weighted);
  * validation runs on rank 0 over the full validation set (exactly as a single process would) and
    its metrics are broadcast, so every rank takes the same early-stopping decision;
  * only rank 0 writes checkpoints, metrics.csv, TensorBoard events and config.yaml.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vidseq.errors import TrainingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # True when setup_distributed created the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables ((0, 1, 0) if unset)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise TrainingError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from None
    return rank, world, local


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed): the one process that should write files and print."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_world()[0] == 0


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``.

    Args:
        device: the engine's device preference; ``cpu`` forces ``gloo`` even when CUDA exists.

    Returns:
        The context; ``owns_group`` tells whether :func:`cleanup_distributed` should destroy the group.
    """
    rank, world, local = env_world()
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), owns_group=False)
    if device == "mps" or device.startswith("mps:"):
        raise TrainingError("distributed training on mps is not supported; use --set train.device=cpu")
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    logger.debug("joined process group: rank %d/%d (local %d), backend %s", rank, world, local, backend)
    return DistContext(rank, world, local, backend, owns_group=True)


def cleanup_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def _comm_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a list of floats over all ranks (float64); returns them unchanged in a single process."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, *,
               find_unused_parameters: bool = False) -> nn.Module:
    """Wrap in DDP when distributed (parameters are broadcast from rank 0), else return ``model``."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=ids[0] if ids else None,
               find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or ``model`` itself)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model
