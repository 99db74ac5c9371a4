"""Shared fixtures for train/ tests: tiny seeded data and configs, one intra-op thread (tiny models gain nothing
from more, and a contended 2-core CI box loses a lot to OpenMP barrier waits)."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from edge_encoder.train.config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_images() -> np.ndarray:
    """uint8 (64, 16, 16, 3): random images with a smooth per-image colour so views share content."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 1, 1, 3))
    noise = rng.integers(-40, 40, (64, 16, 16, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_config() -> Callable[..., TrainConfig]:
    """Factory: a ResNet-18 layout of width 4 on 16 px images, 4 steps per epoch of 64 images."""

    def make(**overrides: object) -> TrainConfig:
        base = dict(width=4, batch_size=16, epochs=2, queue_size=40, log_every=1, split_bn_groups=2, proj_dim=16)
        return TrainConfig(**{**base, **overrides})

    return make
