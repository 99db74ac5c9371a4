"""The embedding cache on a full disk: the run stops with an OSError naming the file, and the cache keeps no
half of a pair (no ``.npy`` without its ``.json``, no temp file), so the next run recomputes cleanly."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.extract import extract


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8)  # 64 x 48 float32: 12.4 KB


@pytest.mark.parametrize("size, fails", [("8k", ".npy"), ("16k", ".json")])  # 16 KiB: the .npy fits, its .json not
def test_a_full_disk_leaves_no_half_pair(small_tmpfs: Callable[..., Path], size: str, fails: str) -> None:
    cache = small_tmpfs(size=size)
    images = _images()
    with RawPixelEngine(images) as engine, pytest.raises(OSError) as info:
        extract(engine, images, cache_dir=cache, dataset_id="probe", split="train")
    assert info.value.errno == errno.ENOSPC and str(info.value.filename).endswith(fails)
    assert sorted(p.name for p in cache.iterdir()) == []  # nothing half-written, no temp file
