"""Fixtures of the subcommand tests: foreign ONNX encoders exported here (a torchvision ResNet-18, tiny CNNs), a
tiny deploy bundle, and two ways to call the CLI (in this process, or the installed console script)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edge_encoder import cli

CONSOLE_SCRIPT = Path(sys.executable).parent / "edge-encoder"
# Quick evaluation settings: no linear probe, no approximate-index sweep (each has its own tests in tests/evaluate).
QUICK = ["--set", "evaluate.linear_probe=false", "--set", "evaluate.index_benchmark=false", "--no-progress"]


def call(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``edge-encoder ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_script(*argv: Any, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """The installed ``edge-encoder`` console script in its own process."""
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)


def export_onnx(model: torch.nn.Module, path: Path, size: int, *, dynamic_hw: bool = False) -> Path:
    """``model`` as a float32 NCHW ONNX file (input ``input``, dynamic batch; dynamic H/W when asked), exported
    the way a user exports a torchvision model (TorchScript exporter: seconds, one self-contained file)."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (torch.randn(2, 3, size, size),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"], dynamic_axes={"input": axes})
    return path


@pytest.fixture(scope="session")
def resnet18_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision ResNet-18 (random init, seed 0, ``fc = Identity``: 512-d un-normalised features), float NCHW
    at 32 px, expecting ImageNet mean/std."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    return export_onnx(model, tmp_path_factory.mktemp("resnet18") / "resnet18.onnx", 32)


def tiny_cnn(out: str = "features") -> torch.nn.Module:
    """A seeded 2-layer CNN; ``out``: ``features`` (N, 16), ``map`` (N, 16, 1, 1), ``rank3`` (N, 16, 1)."""
    torch.manual_seed(0)
    body = [torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1)]
    tail = {"features": [torch.nn.Flatten()], "map": [], "rank3": [torch.nn.Flatten(start_dim=2)]}[out]
    return torch.nn.Sequential(*body, *tail)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deploy bundle (fp32 + int8_cpu) of the tiny width-8 test backbone at 16 px (``tests/export/tiny_bundle``)."""
    from tests.export.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "deploy", variants=("fp32", "int8_cpu"))


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """Images at several depths with mixed-case suffixes (PNG and JPEG), odd sizes, plus files to ignore."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    names = ["a.png", "b.PNG", "sub/c.jpg", "sub/d.JPEG", "sub/deeper/e.Jpg", "sub/deeper/f.png"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (20 + 3 * i, 28 - 2 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, format="JPEG" if "jp" in name.lower() else "PNG")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / ".hidden" / "skip.png")
    return root
