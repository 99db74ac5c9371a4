"""Multi-process training under ``torchrun``: the process group, the per-rank view of a global batch, collectives.

The layout every helper here shares: the global batch of ``N`` samples (``config.batch_size``) is split across
``W`` ranks in contiguous blocks, rank ``r`` holding global rows ``r * N/W .. (r + 1) * N/W - 1`` (``local_rows``).
This is the same assignment that ``SplitBatchNorm2d`` makes on one device (contiguous blocks of ``N/G`` samples),
so ``W`` ranks with ``g`` split groups each normalise exactly the groups one process with ``G = W * g`` split groups
normalises: DDP with per-rank batch norm *is* the single-process split-BN run, sample for sample. ``gather_rows``
undoes the split (all_gather, then concatenate) so every rank sees the global batch in global order. Blocks rather
than a stride because a block of an NHWC (channels_last) batch is itself NHWC-contiguous: split BN normalises each
block in place of a copy (``benchmarks/split_bn_layouts.py``).

With one process (no ``WORLD_SIZE`` > 1 and no initialised group) nothing here communicates: ``DistContext.world``
is 1 and every helper is the identity.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger(__name__)

DDP_BN_MODES = ("shuffle", "sync")
T = TypeVar("T", bound=Sequence)


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world`` processes; ``created`` when ``setup`` opened the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """The world size ``torchrun`` announces (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank as ``torchrun`` announces it (0 when not launched by it): rank 0 writes the run folder,
    exports and evaluates; the other ranks only train."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def leave_process_group() -> None:
    """Close the ``torchrun`` process group training opened (after a barrier), so that the stages after training
    run single-process and never wait on ranks that have exited; nothing when no group is open."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the ``torchrun`` process group (``env://``) when there is more than one process.

    Backend: nccl for CUDA, gloo otherwise. A CUDA device becomes ``cuda:LOCAL_RANK``. An already initialised
    group (opened by the caller or by an earlier call) is used as it is. A group opened here stays open for later
    calls in this process and is destroyed at interpreter exit: re-creating the default group on torchrun's
    store within one process can meet the previous group's stale rendezvous keys and hang.
    Returns the context and the device to use.
    """
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(rank=dist.get_rank(), world=dist.get_world_size(),
                          local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    elif env_world_size() > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy_if_initialized)
        ctx = DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, created=True)
        logger.info("joined process group: rank %d of %d (%s, %s)", ctx.rank, ctx.world, backend, device)
    else:
        return DistContext(), device
    if ctx.active and device.type == "cuda" and device.index != ctx.local_rank:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return ctx, device


def _destroy_if_initialized() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` without buffer sync in forward (per-rank batch-norm statistics, see
    ``average_bn_buffers_``); the keyword is ``forward_sync_buffers`` in new torch, ``broadcast_buffers`` before."""
    from torch.nn.parallel import DistributedDataParallel

    kwargs: dict = {"device_ids": [device.index] if device.type == "cuda" else None}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    return DistributedDataParallel(module, **kwargs)


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def local_rows(rows: T, rank: int, world: int) -> T:
    """This rank's block of a global-order batch (a tensor, array or list of ``N`` rows, ``N % world == 0``): rows
    ``rank * N/world .. (rank + 1) * N/world - 1``; ``rows`` itself for one process."""
    if world == 1:
        return rows
    n = len(rows) // world
    return rows[rank * n:(rank + 1) * n]


@torch.no_grad()
def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``(n, ...)`` per rank -> ``(W * n, ...)`` in global order (row ``r * n + j`` is rank r's row j); no grad."""
    if not ctx.active:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(ctx.world)]
    dist.all_gather(parts, x)
    return torch.cat(parts)  # rank r's block is rows r * n .. (r + 1) * n - 1


@torch.no_grad()
def broadcast_(x: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    if ctx.active:
        dist.broadcast(x, src=src)
    return x


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum plain numbers over ranks (one small collective)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def average_bn_buffers_(module: nn.Module, ctx: DistContext) -> None:
    """Replace every batch-norm running mean/var by its mean over ranks.

    Per-rank batch norm leaves each rank with running statistics of its own groups; their mean is what
    ``SplitBatchNorm2d`` stores (the update is linear, so averaging at any time gives the same result).
    Called before a checkpoint or a kNN evaluation; a no-op for one process and harmless under SyncBN.
    """
    if not ctx.active:
        return
    bufs = [b for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var) if b is not None]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1).float() for b in bufs])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of every rank's input is the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the global batch of all ranks, differentiable, on any device (gloo on CPU included).

    ``nn.SyncBatchNorm`` refuses CPU tensors; this is its plain-PyTorch equivalent (two differentiable
    all_reduces per layer: the sum, then the centred sum of squares). Used for non-CUDA devices; on CUDA the
    fused ``nn.SyncBatchNorm`` is used instead. State dict keys are those of ``BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        diff_all_reduce = _AllReduceSum.apply
        world = dist.get_world_size()
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = (x.numel() // x.shape[1]) * world
        mean = diff_all_reduce(xf.sum(dims)) / count  # C
        xc = xf - mean.view(shape)
        var = diff_all_reduce((xc * xc).sum(dims)) / count  # C, biased (used to normalise)
        out = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / max(count - 1, 1)), alpha=m)
        return out.to(x.dtype)


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm (split or plain, 1d or 2d) -> a cross-rank one; parameters and buffers are kept (same
    ``Parameter`` objects), so optimiser and momentum-update lists stay valid after a refresh."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_global_bn(module)


def _convert_global_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_global_bn(child))
    return out


def per_rank_batch(batch_size: int, ctx: DistContext) -> int:
    """``batch_size`` is the global batch; each rank takes ``batch_size / W`` (refused when it does not divide)."""
    if batch_size % ctx.world:
        raise ValueError(f"config key 'train.batch_size': {batch_size} (the global batch) must be divisible by the "
                         f"{ctx.world} processes of this torchrun job")
    if batch_size // ctx.world < 2 and ctx.world > 1:
        raise ValueError(f"config key 'train.batch_size': {batch_size} leaves fewer than 2 samples per process "
                         f"({ctx.world} processes); batch norm needs at least 2")
    return batch_size // ctx.world
