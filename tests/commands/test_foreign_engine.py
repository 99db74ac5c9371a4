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


class ChannelsLast(torch.nn.Module):
    """``model`` behind a float32 (N, H, W, 3) input, as Keras/TensorFlow export a graph."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


class FeaturesAndLogits(torch.nn.Module):
    """Two outputs, features first, as classifiers exported with their penultimate layer have."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = tiny_cnn(), torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def test_a_channels_last_float_graph_gives_the_channels_first_graphs_rows(tmp_path: Path) -> None:
    model = tiny_cnn().eval()
    nchw = export_onnx(model, tmp_path / "nchw.onnx", 20)
    nhwc = tmp_path / "nhwc.onnx"
    torch.onnx.export(ChannelsLast(model).eval(), (torch.randn(1, 20, 20, 3),), str(nhwc), dynamo=False,
                      input_names=["input_1"], dynamic_axes={"input_1": {0: "batch"}})
    images = np.random.default_rng(1).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    common = dict(preprocess={"mean": MEAN, "std": STD}, l2_normalize_output=True)
    with OnnxRuntimeEngine(nchw, **common) as first, OnnxRuntimeEngine(nhwc, **common) as last:
        assert (first.input_layout, last.input_layout) == ("float_nchw", "float_nhwc")
        assert (last.input_spec.height, last.input_spec.width) == (20, 20)
        np.testing.assert_allclose(last.embed(images), first.embed(images), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="is float_nhwc .* not the declared float_nchw"):
        OnnxRuntimeEngine(nhwc, input_layout="float_nchw", **common)
    with pytest.raises(ValueError, match="needs the normalisation"):
        OnnxRuntimeEngine(nhwc, l2_normalize_output=True)


def test_the_embedding_output_is_chosen_by_name_and_the_first_by_default(tmp_path: Path, caplog) -> None:
    path = tmp_path / "two.onnx"
    model = FeaturesAndLogits().eval()
    torch.onnx.export(model, (torch.randn(1, 3, 20, 20),), str(path), dynamo=False, input_names=["x"],
                      output_names=["features", "logits"], dynamic_axes={"x": {0: "n"}})
    images = np.random.default_rng(2).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    common = dict(preprocess={"mean": MEAN, "std": STD}, l2_normalize_output=True)
    with caplog.at_level("WARNING"), OnnxRuntimeEngine(path, **common) as engine:
        assert engine.output_name == "features" and engine.embed(images).shape == (4, 16)
    assert "2 outputs ('features' ['n', 16], 'logits' ['n', 5]): 'features' is taken as the embedding" in caplog.text
    with OnnxRuntimeEngine(path, output_name="logits", **common) as engine:
        assert engine.output_name == "logits" and engine.embed(images).shape == (4, 5)
    with pytest.raises(ValueError, match="no output 'emb'; the graph's outputs are 'features', 'logits'"):
        OnnxRuntimeEngine(path, output_name="emb", **common)


def test_a_graph_with_two_inputs_is_refused_naming_them(tmp_path: Path) -> None:
    class TwoInputs(torch.nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (x * mask).mean(dim=(2, 3))

    path = tmp_path / "two_in.onnx"
    torch.onnx.export(TwoInputs(), (torch.randn(1, 3, 8, 8), torch.ones(1, 1, 8, 8)), str(path), dynamo=False,
                      input_names=["x", "mask"])
    with pytest.raises(ValueError, match=r"the graph has 2 inputs \('x' .*'mask' .*\); an image encoder takes one"):
        OnnxRuntimeEngine(path, preprocess={"mean": MEAN, "std": STD})


@pytest.mark.parametrize("preset, expected", [("tf", 200 / 127.5 - 1), ("raw255", 200.0)])
def test_keras_presets_give_the_values_keras_preprocessing_gives(preset: str, expected: float) -> None:
    from edge_encoder.commands.engine_args import NORMALIZATION_PRESETS
    from edge_encoder.device.engines import normalize_images

    got = normalize_images(np.full((1, 2, 2, 3), 200, np.uint8), *NORMALIZATION_PRESETS[preset])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_token_output_is_passed_over_for_the_pooled_one(tmp_path: Path, caplog) -> None:
    """A ViT export: last_hidden_state (N, T, D) first, pooler_output (N, D) second."""

    class TokensAndPooled(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tokens = x.flatten(2).transpose(1, 2)  # (N, H*W, 3)
            return tokens, tokens.mean(dim=1)

    path = tmp_path / "vit.onnx"
    torch.onnx.export(TokensAndPooled(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["last_hidden_state", "pooler_output"], dynamic_axes={"pixels": {0: "n"}})
    common = dict(preprocess={"mean": MEAN, "std": STD}, l2_normalize_output=True)
    with caplog.at_level("WARNING"), OnnxRuntimeEngine(path, **common) as engine:
        assert engine.output_name == "pooler_output"
        assert engine.embed(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 3)
    assert "'pooler_output' is taken as the embedding" in caplog.text
    with pytest.raises(ValueError, match="has rank 3; .* --output NAME picks one"):
        OnnxRuntimeEngine(path, output_name="last_hidden_state", **common)


def test_a_half_precision_graph_takes_float16_and_gives_the_float_graphs_rows(tmp_path: Path) -> None:
    model = tiny_cnn().eval()
    full = export_onnx(model, tmp_path / "full.onnx", 20)
    half = tmp_path / "half.onnx"
    torch.onnx.export(tiny_cnn().eval().half(), (torch.randn(1, 3, 20, 20).half(),), str(half), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    images = np.random.default_rng(4).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    common = dict(preprocess={"mean": MEAN, "std": STD}, l2_normalize_output=True)
    with OnnxRuntimeEngine(full, **common) as f32, OnnxRuntimeEngine(half, **common) as f16:
        assert f16.input_layout == "float_nchw"
        rows = f16.embed(images)
        assert rows.dtype == np.float32
        np.testing.assert_allclose(rows, f32.embed(images), rtol=0, atol=5e-3)  # float16 rounding
