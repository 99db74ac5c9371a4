"""Data feeding for the training loop: ``(step, uint8 batch on the device)`` either from a device-resident copy of
an in-memory ``uint8 (N, H, W, 3)`` array or streamed by DataLoader workers from any image sequence
(``train.data``). Both take the same rows at every step (``train.data.step_rows``), so they train identically."""

from __future__ import annotations

import contextlib
import os
import time
from typing import ContextManager, Iterator

import numpy as np
import torch
from edge_encoder.train.data import ImageSequence, StepBatchSampler, StreamedBatches, resolve_workers, step_rows
from edge_encoder.train.distributed import DistContext, local_rows
from edge_encoder.train.state import Run


def batches(run: Run, data: torch.Tensor, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(step, uint8 batch)`` from ``run.step`` up to ``stop``, indexing device-resident ``data``.

    Under DDP every rank computes the same global order and takes its block of each global batch (``local_rows``):
    the ranks' samples are disjoint and together the global batch (see ``train.distributed`` for the layout)."""
    d = run.dist
    for step, rows in step_rows(run.config.seed, data.shape[0], run.config.batch_size, run.steps_per_epoch,
                                run.step, stop, data.device):
        yield step, data[local_rows(rows, d.rank, d.world)]  # all rows for one process


def batch_source(run: Run, images: np.ndarray | ImageSequence,
                 stop: int) -> ContextManager[Iterator[tuple[int, torch.Tensor]]]:
    """``with`` it: ``(step, uint8 (B, H, W, 3) batch on the device)`` for steps ``run.step..stop-1``.

    An ndarray is copied to the device once (the fast path for data that fits); a sequence is streamed by
    ``config.data_workers`` DataLoader workers, which leaving the block stops."""
    if isinstance(images, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(images)).to(run.device)  # uint8 N x H x W x 3
        return contextlib.nullcontext(batches(run, data, stop))
    c, d = run.config, run.dist
    # nothing left to train (a finished run called again): no worker processes to start and stop
    workers = resolve_workers(c.data_workers, run.device.type, local_processes(d)) if stop > run.step else 0
    sampler = StepBatchSampler(len(images), c.batch_size, run.steps_per_epoch, c.seed, run.step, stop, d.rank, d.world)
    run.runtime["data_workers"] = workers
    return StreamedBatches(images, run.item_shape, sampler, workers, run.device)


def local_processes(ctx: DistContext) -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE): they share its cores for decoding."""
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world))
    except ValueError:
        return ctx.world


def timed(source: Iterator[tuple[int, torch.Tensor]]) -> Iterator[tuple[float, int, torch.Tensor]]:
    """``(seconds waited for the batch, step, batch)``: the wait is what the model spent idle for its data."""
    while True:
        t = time.perf_counter()
        try:
            step, batch = next(source)
        except StopIteration:
            return
        yield time.perf_counter() - t, step, batch
