"""Shared test fixtures: locating the real data at hand without ever requiring it, and tiny seeded datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cifar10_dev_path() -> Path | None:
    """``$EDGE_ENCODER_CIFAR10_DEV`` or ``../shared/data/cifar10_dev.npz`` beside the project, if present."""
    candidates = [os.environ.get("EDGE_ENCODER_CIFAR10_DEV"), PROJECT_ROOT.parent / "shared" / "data" / "cifar10_dev.npz"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture
def cifar10_dev() -> Path:
    path = cifar10_dev_path()
    if path is None:
        pytest.skip("cifar10_dev.npz not found (set EDGE_ENCODER_CIFAR10_DEV or place it at ../shared/data/)")
    return path


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A small, learnable npz dataset: 4 classes of coloured shapes on noise, 16x16."""
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 4
        images = rng.integers(0, 60, size=(count, 16, 16, 3)).astype(np.uint8)
        for image, label in zip(images, labels):
            top, left = rng.integers(0, 8, size=2)
            image[top : top + 8, left : left + 8, label % 3] = 230
            if label == 3:
                image[top : top + 8, left : left + 8] = 230
        return images, labels.astype(np.int64)

    x_train, y_train = make(128)
    x_test, y_test = make(48)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def write_png_tree() -> Callable[..., Path]:
    """Factory: ``write(root, classes=4, per_class=20, size=(16, 16))`` writes ``root/<class>/<i>.png`` (seeded RGB
    images, a class colour plus noise; odd sizes welcome) and returns ``root``."""

    def write(root: Path, classes: int = 4, per_class: int = 20, size: tuple[int, int] = (16, 16)) -> Path:
        from PIL import Image

        rng = np.random.default_rng(0)
        for c in range(classes):
            (root / f"class_{c}").mkdir(parents=True)
            for i in range(per_class):
                base = rng.integers(0, 256, (1, 1, 3))
                pixels = np.clip(base + rng.integers(-40, 40, (*size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / f"class_{c}" / f"{i:03d}.png")
        return root

    return write
