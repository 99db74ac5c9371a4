"""Which images each training step takes, and the streamed data path for image sources not held in memory.

The rows of step ``s`` (``e, i = divmod(s, steps_per_epoch)``): the global batch
``epoch_order(seed, e, n)[i*B:(i+1)*B]``, of which rank ``r`` of ``W`` takes ``[r::W]``. ``step_rows`` is that
definition; the in-memory path (``train.loop._batches``) indexes a device-resident tensor with it and
``StepBatchSampler`` hands the same rows to a ``torch.utils.data.DataLoader``. So a streamed run takes the same
images in the same order as an in-memory one, and a resume at step ``s`` needs no sampler state.

``StreamedBatches`` runs the DataLoader: worker processes decode the items (``imagedata.FolderImages`` or any
indexable sequence of ``uint8 (H, W, 3)`` arrays), the default collate stacks them into ``uint8 (B, H, W, 3)``
(through shared memory from workers), pinned memory and a non-blocking copy feed a CUDA device. Augmentation is
not done here: the loop augments the uint8 batch on the device, as for in-memory data.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from edge_encoder.core.contract import check_image_item
from edge_encoder.train.distributed import local_rows
from torch.utils.data import DataLoader, Dataset, Sampler

# Batches decoded ahead, over all workers: a slow batch (large JPEGs, a cold disk) is absorbed instead of
# stalling a step; at least 2 per worker, torch's default.
_PREFETCH_BATCHES = 4
_MAX_AUTO_WORKERS = 4


class ImageSequence(Protocol):
    """What the streamed path reads: ``len(images)`` items, ``images[i]`` a ``uint8 (H, W, 3)`` RGB array."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch, ``int64 (n,)``: a pure function of (seed, epoch), so resume needs no sampler
    state."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def step_rows(seed: int, n: int, batch_size: int, steps_per_epoch: int, start: int, stop: int,
              device: torch.device | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(step, int64 (batch_size,) rows of the global batch)`` for steps ``start..stop-1`` (on ``device``)."""
    order, order_epoch = torch.empty(0, dtype=torch.int64), -1
    for step in range(start, stop):
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != order_epoch:  # recomputed from (seed, epoch) alone: the same after a resume
            order, order_epoch = epoch_order(seed, epoch, n).to(device or "cpu"), epoch
        yield step, order[i * batch_size:(i + 1) * batch_size]


class StepBatchSampler(Sampler[list[int]]):
    """This rank's row indices of steps ``start..stop-1``, one list per step (a DataLoader ``batch_sampler``).

    One pass spans every remaining step, across epoch boundaries: the DataLoader's workers start once per
    training call and keep decoding ahead through an epoch's end (no per-epoch restart, no pipeline drain).
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1) -> None:
        assert 0 <= rank < world and batch_size % world == 0, (rank, world, batch_size)
        self.n, self.batch_size, self.steps_per_epoch, self.seed = n, batch_size, steps_per_epoch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for _, rows in step_rows(self.seed, self.n, self.batch_size, self.steps_per_epoch, self.start, self.stop):
            yield local_rows(rows, self.rank, self.world).tolist()


def check_sequence(images: Any) -> tuple[int, tuple[int, ...]]:
    """``(item count, item shape)`` of an image sequence, judged by its first item.

    Raises:
        TypeError: not indexable, or an item that is not a numpy array.
        ValueError: empty, or a first item that is not ``uint8 (H, W, 3)``.
    """
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise TypeError("train images must be a numpy.ndarray uint8 (N, H, W, 3) or an indexable image sequence "
                        f"(__len__, __getitem__(int) -> uint8 (H, W, 3)), got {type(images).__name__}")
    n = len(images)
    if n == 0:
        raise ValueError(f"train images: the {type(images).__name__} is empty")
    first = images[0]
    check_item(first, 0)
    return n, tuple(first.shape)


def check_item(item: Any, index: int, expected: tuple[int, ...] | None = None) -> None:
    """Raise naming item ``index`` unless it is a ``uint8 (H, W, 3)`` array (of shape ``expected`` when given)."""
    check_image_item(item, index, expected, what="train image")


class _CheckedImages(Dataset):
    """The sequence, each item checked against item 0's shape: a mixed-size item is named, not a stack error."""

    def __init__(self, images: ImageSequence, shape: tuple[int, ...]) -> None:
        self.images, self.shape = images, shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        item = self.images[index]
        check_item(item, index, self.shape)
        return item


def resolve_workers(setting: int | str, device_type: str, local_processes: int = 1,
                    compute_threads: int | None = None) -> int:
    """DataLoader worker processes: ``setting`` itself, or for ``"auto"`` the cores the training step leaves free.

    ``cores`` = usable cores / training processes on this machine. On CUDA the step runs on the GPU: all but one
    core (the one launching kernels) decode, at least 1 and at most 4. On a CPU the step's ``compute_threads``
    (``torch.get_num_threads()``) already occupy the cores, and a worker decoding there preempts one of them while
    the others wait for it at the next barrier: on 2 cores, 1 or 2 workers trained 4-10 % slower than decoding in
    the training process (``benchmarks/train_streaming.py``). So only cores beyond ``compute_threads`` get a
    worker, and on a CPU using all its cores that is 0.
    """
    if setting != "auto":
        return int(setting)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, usable // max(1, local_processes))
    if device_type == "cuda":
        return max(1, min(_MAX_AUTO_WORKERS, cores - 1))
    threads = torch.get_num_threads() if compute_threads is None else compute_threads
    return max(0, min(_MAX_AUTO_WORKERS, cores - threads))


def _ignore_signals(worker_id: int) -> None:
    """Workers ignore SIGINT/SIGTERM: a Ctrl-C or a scheduler's SIGTERM reaches the whole process group, and a
    worker dying of it would fail the main process's next fetch before it can checkpoint. The main process
    handles the signal (checkpoint at the step boundary) and then stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StreamedBatches:
    """``(step, uint8 (B, H, W, 3) batch on device)`` for the sampler's steps, decoded by DataLoader workers.

    A context manager: entering starts the workers (``workers = 0`` decodes in this process), and leaving stops
    them, also when training stops early on an error, ``stop_at_step`` or a signal.
    """

    def __init__(self, images: ImageSequence, item_shape: tuple[int, ...], sampler: StepBatchSampler, workers: int,
                 device: torch.device) -> None:
        pin = device.type == "cuda"  # page-locked host batches: the copy to the GPU runs asynchronously
        self._loader = DataLoader(
            _CheckedImages(images, item_shape), batch_sampler=sampler, num_workers=workers, pin_memory=pin,
            worker_init_fn=_ignore_signals if workers else None,
            prefetch_factor=max(2, math.ceil(_PREFETCH_BATCHES / workers)) if workers else None,
            # The sampler spans all remaining steps, so one iterator lives for the whole call: the workers already
            # persist across epochs, and with persistent_workers they would outlive the last batch too.
            persistent_workers=False)
        self._device, self._non_blocking, self._step = device, pin, sampler.start
        self._iterator: Iterator[torch.Tensor] | None = None

    def __enter__(self) -> "StreamedBatches":
        self._iterator = iter(self._loader)
        return self

    def __iter__(self) -> "StreamedBatches":
        return self

    def __next__(self) -> tuple[int, torch.Tensor]:
        if self._iterator is None:
            raise RuntimeError("StreamedBatches is iterated outside its `with` block")
        batch = next(self._iterator)  # StopIteration after the sampler's last step (the workers then exit)
        step, self._step = self._step, self._step + 1
        return step, batch.to(self._device, non_blocking=self._non_blocking)

    def __exit__(self, *exc: object) -> None:
        iterator, self._iterator = self._iterator, None
        # Stop the workers now (end sentinel, join, terminate as a last resort). Dropping the reference is not
        # enough: an error raised inside the DataLoader (a worker's bad item) keeps the iterator alive in the
        # traceback's frames, and with it the workers, for as long as the caller holds the exception. torch's
        # iterator runs the same method from __del__; the single-process iterator has no workers.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
