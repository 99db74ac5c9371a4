"""What the stages need to know about a split's images: its channel statistics, selected images decoded, and
the seeded rows the kNN monitor uses. Each works on an array or on an image sequence (``FolderImages``) alike."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def take_images(images: Any, rows: slice | np.ndarray) -> np.ndarray:
    """``images[rows]`` as ``uint8 (len(rows), H, W, 3)``: an array indexed as always, or the selected items of an
    image sequence (``data.stream``) decoded and stacked: only those are decoded."""
    if isinstance(images, np.ndarray):
        return images[rows]
    indices = range(*rows.indices(len(images))) if isinstance(rows, slice) else [int(i) for i in rows]
    if len(indices) == 0:
        return np.zeros((0, *images[0].shape), dtype=np.uint8)
    return np.stack([images[i] for i in indices])


def channel_stats(images: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``uint8 (N, H, W, 3)`` images on the 0..1 scale (the preprocessing contract).

    An image sequence (``data.stream``) is read in one pass, one image at a time, into per-channel counts of the
    256 values; mean and std follow exactly from those counts. A seeded sample would be cheaper, but its statistics
    differ from the full split's (in the 3rd-4th decimal for 5,000 images), so a streamed run would not train on
    the same inputs as an in-memory one; the full pass costs one decode of the train split (~85 us an image for
    32 px PNGs here, a few ms for ImageNet JPEGs), against the decode per epoch that training and the decode per
    engine that evaluation pay anyway. The results equal the in-memory ones to the 6 decimals kept.
    """
    if not isinstance(images, np.ndarray):
        return _streamed_channel_stats(images)
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-3)  # a constant channel (grey data) must not divide by zero
    return [round(float(v), 6) for v in pixels.mean(axis=0)], [round(float(v), 6) for v in std]


def _streamed_channel_stats(images: Any) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of an image sequence, from exact per-channel value counts (constant memory)."""
    started = time.perf_counter()
    offsets = np.array([0, 256, 512], dtype=np.uint16)  # channel c's value v counts in bin 256 * c + v
    counts = np.zeros(3 * 256, dtype=np.int64)
    for i in range(len(images)):
        counts += np.bincount((images[i].reshape(-1, 3) + offsets).ravel(), minlength=3 * 256)
    counts = counts.reshape(3, 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    std = np.sqrt((counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total)
    std = np.maximum(std, 1e-3)  # a constant channel (grey data) must not divide by zero
    log.info("channel statistics: one streamed pass over all %d train images in %.1f s", len(images),
             time.perf_counter() - started)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def knn_monitor_rows(num_train: int, num_test: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``int64`` rows of the train and test splits for the kNN monitor: a seeded random subset of at most
    ``limit`` rows of each (all rows when the split is smaller), drawn from one generator (train first).

    Random rows, not the first ``limit``: folder datasets are sorted by class, and their first images would cover
    a few classes only; sorted, so that a streamed folder is read forward."""
    rng = np.random.default_rng(seed)
    return tuple(np.sort(rng.choice(n, size=min(limit, n), replace=False)).astype(np.int64)  # type: ignore[return-value]
                 for n in (num_train, num_test))
