"""Split batch norm in NHWC (channels_last): forward + backward time per layer of four ways to compute it.

lightly's ``SplitBatchNorm`` and the MoCo code normalise interleaved groups (sample n in group n % G) by viewing
``(N, C, H, W)`` as ``(N/G, G*C, H, W)``. That is a view only for NCHW; in NHWC the reshape copies the input and
returns an NCHW output (which the next NHWC convolution copies again). This measures, at the width-16 ResNet-18's
batch-norm shapes (batch 256, 32 px views):

- ``interleaved_reshape``: that view (``train.moco.SplitBatchNorm2d`` until 2026-12-07);
- ``blocks_cat``: ``SplitBatchNorm2d`` as shipped: contiguous blocks of the batch (``x.chunk(G)``), one
  ``batch_norm`` each, joined with ``cat``;
- ``blocks_out``: contiguous blocks through the ``.out`` variants of ``native_batch_norm`` and its backward,
  writing into slices of one output (no copy, an autograd function);
- ``plain``: one ``batch_norm`` over the whole batch (what the CPU presets train with, ``split_bn_groups = 1``).

Prints milliseconds (lower quartile of ``--reps``) per layer and their sum. Blocks group other samples than the
interleaved view, and the DDP row layout (``train.distributed``) gives each rank a block to match.

Usage: python benchmarks/split_bn_layouts.py [--groups 8] [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from edge_encoder.train.moco import SplitBatchNorm2d

SHAPES = ((16, 32), (32, 16), (64, 8), (128, 4))  # (channels, side) of the width-16 ResNet-18's stages at 32 px


class BlockBatchNorm(torch.autograd.Function):
    """Batch norm per contiguous block of the batch, written in place into one output (``.out`` variants)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        rows = x.shape[0] // groups
        out = torch.empty_like(x)
        means, invstds = (weight.new_empty(groups, x.shape[1]) for _ in range(2))
        for g in range(groups):
            block = slice(g * rows, (g + 1) * rows)
            torch.ops.aten.native_batch_norm.out(x[block], weight, bias, None, None, True, 0.0, eps,
                                                 out=out[block], save_mean=means[g], save_invstd=invstds[g])
        ctx.save_for_backward(x, weight, means, invstds)
        ctx.groups, ctx.eps = groups, eps
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x, weight, means, invstds = ctx.saved_tensors
        rows = x.shape[0] // ctx.groups
        grad_x = torch.empty_like(x)
        grad_w, grad_b = weight.new_zeros(ctx.groups, *weight.shape), weight.new_zeros(ctx.groups, *weight.shape)
        for g in range(ctx.groups):
            block = slice(g * rows, (g + 1) * rows)
            torch.ops.aten.native_batch_norm_backward.out(
                grad_out[block], x[block], weight, None, None, means[g], invstds[g], True, ctx.eps,
                [True, True, True], out0=grad_x[block], out1=grad_w[g], out2=grad_b[g])
        return grad_x, grad_w.sum(0), grad_b.sum(0), None, None


def interleaved_reshape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    """Sample n in group n % G through the ``(N/G, G*C, H, W)`` view (lightly's ``SplitBatchNorm``)."""
    n, c, h, w = x.shape
    return F.batch_norm(x.reshape(n // groups, groups * c, h, w), None, None, weight.repeat(groups),
                        bias.repeat(groups), True, 0.0, 1e-5).view(n, c, h, w)


def lower_quartile_ms(fn: Callable[[], None], reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 4] * 1e3


def layer_times(channels: int, side: int, groups: int, reps: int) -> dict[str, float]:
    """Milliseconds of forward + backward for each way, on a (256, channels, side, side) NHWC fp32 input."""
    x = torch.randn(256, channels, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight, bias = torch.randn(channels, requires_grad=True), torch.randn(channels, requires_grad=True)
    grad = torch.randn_like(x)
    shipped = SplitBatchNorm2d(channels, groups)
    ways: dict[str, Callable[[], torch.Tensor]] = {
        "interleaved_reshape": lambda: interleaved_reshape(x, weight, bias, groups),
        "blocks_cat": lambda: shipped(x),
        "blocks_out": lambda: BlockBatchNorm.apply(x, weight, bias, groups, 1e-5),
        "plain": lambda: F.batch_norm(x, None, None, weight, bias, True, 0.0, 1e-5),
    }
    return {name: lower_quartile_ms(lambda f=f: f().backward(grad), reps) for name, f in ways.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    rows = {f"{c}x{s}x{s}": layer_times(c, s, args.groups, args.reps) for c, s in SHAPES}
    total = {name: sum(r[name] for r in rows.values()) for name in next(iter(rows.values()))}
    print(json.dumps({"isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                      "groups": args.groups, "ms_per_layer": {k: {n: round(v, 2) for n, v in r.items()}
                                                             for k, r in rows.items()},
                      "ms_sum": {n: round(v, 2) for n, v in total.items()}}))


if __name__ == "__main__":
    main()
