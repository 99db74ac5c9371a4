"""A real tiny deploy bundle for the bundle-file and verify tests: synthetic labelled images (no shared data)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.export.bundle import BundleImages, export_bundle
from edge_encoder.export.config import ExportConfig
from edge_encoder.device.parity import DEFAULT_THRESHOLDS

from tests.export.conftest import BACKBONE_CONFIG, IMAGE_SIZE, PREPROCESS, make_backbone

# Random-init models have fragile neighbours (see test_export_bundle); relax only those gates for INT8.
RELAXED = {v: dataclasses.replace(DEFAULT_THRESHOLDS[v], min_top1_agreement=0.4, min_top10_overlap=0.6)
           for v in ("int8_trt", "int8_cpu")}


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(count, 16, 16, 3)`` coloured squares on noise, 4 classes, and their int64 labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 4
    images = rng.integers(0, 60, size=(count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    for image, label in zip(images, labels):
        top, left = rng.integers(0, IMAGE_SIZE // 2, size=2)
        image[top:top + 8, left:left + 8, label % 3] = 230
        if label == 3:
            image[top:top + 8, left:left + 8] = 230
    return images, labels.astype(np.int64)


def build_tiny_bundle(out: Path, variants: Sequence[str] = ("fp32", "fp16", "int8_trt", "int8_cpu"),
                      parity: int = 64) -> Path:
    """Export a width-8 ResNet-18 on 16x16 synthetic images: every variant passes its (relaxed) gate."""
    calib, _ = synthetic_images(64, seed=1)
    images, labels = synthetic_images(parity, seed=2)
    export_bundle((make_backbone(), PREPROCESS, BACKBONE_CONFIG), out, BundleImages(calib, images, labels),
                  ExportConfig(variants=tuple(variants), exporter="torchscript", thresholds=RELAXED))
    return out


def copy_bundle(bundle: Path, dest: Path) -> Path:
    """A private copy a test may damage (the module's bundle stays intact)."""
    shutil.copytree(bundle, dest)
    return dest


def edit_manifest(bundle: Path, edit: Any) -> dict[str, Any]:
    """Apply ``edit(manifest_dict)`` and write manifest.json back (the way a careless or hostile user would)."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def largest_initializer_middle(onnx_path: Path) -> int:
    """Byte offset, in the file, of the middle of the largest initializer's raw data: the most significant byte
    (sign and exponent, little-endian float32) of its middle element, so that a flip changes the weight a lot."""
    import onnx

    model = onnx.load(str(onnx_path))
    raw = max(model.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = onnx_path.read_bytes()
    start = data.find(raw)
    assert start >= 0 and data.find(raw, start + 1) < 0, "initializer bytes not found once in the file"
    return start + (len(raw) // 2) // 4 * 4 + 3
