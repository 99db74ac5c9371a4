"""benchmarks/export_int8_fidelity.py on a real tiny bundle: its table, its JSON, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.export.bundle import BundleImages, export_bundle
from edge_encoder.export.config import ExportConfig

from tests.export.conftest import BACKBONE_CONFIG, PREPROCESS, make_backbone
from tests.export.tiny_bundle import RELAXED, synthetic_images

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "export_int8_fidelity.py"


@pytest.fixture(scope="module")
def bundle_and_data(tmp_path_factory) -> tuple[Path, Path]:
    """A fp32 bundle calibrated on recorded rows of an npz train split, and that npz."""
    root = tmp_path_factory.mktemp("fidelity")
    x_train, y_train = synthetic_images(96, seed=1)
    x_test, y_test = synthetic_images(64, seed=2)
    npz = root / "data.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    rows = np.arange(0, 96, 2)
    images = BundleImages(x_train[rows], x_test, y_test, calibration_indices=rows)
    export_bundle((make_backbone(), PREPROCESS, BACKBONE_CONFIG), root / "deploy", images,
                  ExportConfig(variants=("fp32",), exporter="torchscript", thresholds=RELAXED))
    return root / "deploy", npz


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_table_and_json_for_two_settings(bundle_and_data, tmp_path) -> None:
    bundle, npz = bundle_and_data
    out = tmp_path / "fidelity.json"
    done = _run(str(bundle), "--dataset", f"npz:{npz}", "--knn-k", "5", "--setting", "trt=int8_trt:",
                "--setting", "trt_stem=int8_trt:float_input_convs=False", "--noise-seeds", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "onnx_fp32 kNN top-1" in done.stdout and "noise floor" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["settings"]) == {"trt", "trt_stem"}
    for row in result["settings"].values():
        assert 0 <= row["top1_agreement"] <= 1 and 0 <= row["top10_agreement"] <= 1
        assert 0.9 < row["cosine_mean"] <= 1.0 + 1e-6  # INT8 of a real encoder stays close to FP32
        assert row["delta_points"] == pytest.approx(100 * (row["knn_top1"] - result["fp32_knn_top1"]))
    assert len(result["noise_floor"]["deltas_points"]) == 2


def test_refuses_a_bad_setting_in_one_line(bundle_and_data) -> None:
    bundle, npz = bundle_and_data
    done = _run(str(bundle), "--dataset", f"npz:{npz}", "--setting", "x=int8_trt:stem=fp32")
    assert done.returncode != 0 and "'stem' is not a QuantConfig field" in done.stderr
    assert "Traceback" not in done.stderr
