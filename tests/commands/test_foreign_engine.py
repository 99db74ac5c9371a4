"""A foreign ONNX encoder held to the engine contract (``OnnxRuntimeEngine(l2_normalize_output=True)``): against
the PyTorch model it was exported from, normalised by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from edge_encoder.device.engines import OnnxRuntimeEngine

from tests.commands.conftest import export_onnx, tiny_cnn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("out", ["features", "map"])
def test_rows_are_the_models_features_normalised_then_l2_normalised(tmp_path: Path, out: str) -> None:
    model = tiny_cnn(out).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 20, dynamic_hw=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(x).reshape(5, -1), dim=1).numpy()
    with OnnxRuntimeEngine(path, preprocess={"mean": MEAN, "std": STD}, image_size=20, l2_normalize_output=True,
                           input_layout="float_nchw") as engine:
        assert engine.input_layout == "float_nchw" and (engine.input_spec.height, engine.input_spec.width) == (20, 20)
        got = engine.embed(images)
    assert got.shape == (5, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_declared_contract_mismatches_are_value_errors(tmp_path: Path) -> None:
    path = export_onnx(tiny_cnn(), tmp_path / "m.onnx", 20)
    with pytest.raises(ValueError, match="not the declared uint8_nhwc"):
        OnnxRuntimeEngine(path, preprocess={"mean": MEAN, "std": STD}, input_layout="uint8_nhwc")
    with pytest.raises(ValueError, match="not the image size 32"):
        OnnxRuntimeEngine(path, preprocess={"mean": MEAN, "std": STD}, image_size=32)
    with pytest.raises(ValueError, match="normalisation"):
        OnnxRuntimeEngine(path)
    rank3 = export_onnx(tiny_cnn("rank3"), tmp_path / "r3.onnx", 20)
    with pytest.raises(ValueError, match=r"must be \(N, D\) or \(N, C, H, W\)"):
        OnnxRuntimeEngine(rank3, preprocess={"mean": MEAN, "std": STD}, l2_normalize_output=True)
