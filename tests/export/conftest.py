"""Shared tiny fixtures: a width-8 ResNet-18 (CIFAR stem) with non-trivial BatchNorm statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from edge_encoder.train.backbones import build_backbone

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 16
PREPROCESS = {"image_size": IMAGE_SIZE, "mean": [0.491, 0.482, 0.447], "std": [0.247, 0.243, 0.261]}
BACKBONE_CONFIG = {"arch": "resnet18", "width": 8, "stem": "cifar"}


def make_backbone(seed: int = 0) -> torch.nn.Module:
    """Seeded tiny backbone; BN stats/affine randomised so that folding BN actually matters."""
    torch.manual_seed(seed)
    backbone = build_backbone(BACKBONE_CONFIG)
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return backbone.eval()


def cifar_path() -> Path:
    return Path(os.environ.get("EDGE_ENCODER_CIFAR10_DEV", PROJECT_ROOT.parent / "shared" / "data" / "cifar10_dev.npz"))


@pytest.fixture(scope="session")
def backbone() -> torch.nn.Module:
    return make_backbone()


@pytest.fixture(scope="session")
def real_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration uint8 (64,16,16,3), parity uint8 (96,16,16,3), parity labels) from real CIFAR-10 crops."""
    path = cifar_path()
    if not path.is_file():
        pytest.skip(f"CIFAR-10 dev file not found at {path} (set EDGE_ENCODER_CIFAR10_DEV)")
    with np.load(path) as d:
        lo, hi = 8, 8 + IMAGE_SIZE  # centre crop keeps real image statistics at a tiny size
        calib = np.ascontiguousarray(d["x_train"][:64, lo:hi, lo:hi])
        parity = np.ascontiguousarray(d["x_test"][:96, lo:hi, lo:hi])
        labels = d["y_test"][:96].astype(np.int64)
    return calib, parity, labels


@pytest.fixture(scope="session")
def random_images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
