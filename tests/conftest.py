"""Shared test fixtures: locating the real data at hand without ever requiring it, and tiny seeded datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

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


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory: ``mount(size="256k", read_only=False) -> Path``, a fresh tmpfs for disk-full and read-only cases.

    Needs root and a kernel that lets it mount (true on the dev machine; skipped with the reason elsewhere). Every
    mount is unmounted at teardown."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: str = "256k", read_only: bool = False) -> Path:
        import shutil

        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs (disk-full and read-only cases) needs root and mount(8)")
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip() or result.returncode}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
