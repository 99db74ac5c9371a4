"""Shared fixtures for evaluate/ tests: a tiny real engine and a small labelled image set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ProjectionEngine:
    """A real (tiny) engine: pixels -> fixed random projection (stored in a .npy model file) -> L2 norm.

    Counts ``embed`` calls so tests can tell a cache hit from a recomputation.
    """

    def __init__(self, model_path: Path, name: str = "proj") -> None:
        self.name = name
        self.source_path = model_path
        self.weights = np.load(model_path)
        self.calls = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"bad batch shape {images.shape}")
        self.calls += 1
        x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0 - 0.5
        z = x @ self.weights
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    def __enter__(self) -> "ProjectionEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class ListSource:
    """An image source (``len``, ``[i] -> uint8 (H, W, 3)``) over a list of arrays; counts item reads.

    ``fingerprint`` (a string, or ``None`` for a source without the method) stands in for what a folder derives
    from its files: tests change it to say "the items changed".
    """

    def __init__(self, images: np.ndarray | list, fingerprint: str | None = "v1") -> None:
        self.items = [np.array(image) for image in images]
        self.reads = 0
        if fingerprint is not None:
            self.fingerprint = lambda: fingerprint

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        self.reads += 1
        return self.items[index]


def make_projection_model(path: Path, in_dim: int = 8 * 8 * 3, out_dim: int = 16, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).normal(size=(in_dim, out_dim)).astype(np.float32))
    return path


@pytest.fixture
def engine(tmp_path: Path) -> ProjectionEngine:
    return ProjectionEngine(make_projection_model(tmp_path / "proj.npy"))


def make_images(n_per_class: int, num_classes: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured uint8 images: a per-class prototype (fixed seed 123) plus per-image noise."""
    protos = np.random.default_rng(123).integers(40, 216, size=(num_classes, size, size, 3))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = protos[y] + rng.normal(scale=40.0, size=(len(y), size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train = make_images(30, 4, seed=1)
    x_test, y_test = make_images(8, 4, seed=2)
    return x_train, y_train, x_test, y_test


@pytest.fixture
def cifar10_dev() -> dict[str, np.ndarray]:
    env = os.environ.get("EDGE_ENCODER_CIFAR10_DEV")
    path = Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "cifar10_dev.npz"
    if not path.is_file():
        pytest.skip(f"cifar10_dev.npz not found at {path} (set EDGE_ENCODER_CIFAR10_DEV)")
    with np.load(path) as d:
        return {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
