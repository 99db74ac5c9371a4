from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from edge_encoder.core.files import file_sha256
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import (
    DEFAULT_OPSET,
    build_fp32_encoder,
    fold_batchnorm,
    read_metadata,
    region_node_names,
    save_model,
    verify_encoder,
)

from tests.export.conftest import IMAGE_SIZE, PREPROCESS


@dataclass(frozen=True)
class Exported:
    """An FP32 encoder written the way ``export.bundle`` writes ``encoder_fp32.onnx`` (build, then save)."""

    path: Path
    exporter: str  # the exporter build_fp32_encoder reports it used
    sha256: str  # what save_model returned


def export_to(backbone: Any, path: Path, **options: Any) -> Exported:
    model, used, _ = build_fp32_encoder(backbone, PREPROCESS, **options)
    return Exported(path, used, save_model(model, path))


def io_shapes(path: Path) -> tuple[tuple[int | str, ...], tuple[int | str, ...]]:
    """``(input dims, output dims)`` read back from the file (a symbolic dim as its name)."""
    model = onnx.load(path)
    dims = [tuple(d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim)
            for vi in (model.graph.input[0], model.graph.output[0])]
    return dims[0], dims[1]


def default_opset(path: Path) -> int:
    (version,) = [o.version for o in onnx.load(path).opset_import if o.domain == ""]
    return version


@pytest.fixture(scope="module")
def exported(backbone, tmp_path_factory) -> Exported:
    return export_to(backbone, tmp_path_factory.mktemp("onnx") / "encoder.onnx", exporter="torchscript")


def test_saved_file_is_the_requested_graph(exported) -> None:
    assert default_opset(exported.path) == DEFAULT_OPSET == 18 and exported.exporter == "torchscript"
    # every non-batch dim static
    assert io_shapes(exported.path) == (("batch", IMAGE_SIZE, IMAGE_SIZE, 3), ("batch", 64))
    assert exported.sha256 == file_sha256(exported.path)  # save_model's digest is the file's


def test_single_file_no_batchnorm_checked(exported) -> None:
    assert sorted(p.name for p in exported.path.parent.iterdir()) == ["encoder.onnx"]  # no side data file
    model = onnx.load(exported.path)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(model)
    assert meta["input_layout"] == "NHWC" and meta["input_dtype"] == "uint8" and meta["l2_normalized"] == "true"
    assert meta["embedding_dim"] == "64" and meta["image_size"] == str(IMAGE_SIZE)
    regions = region_node_names(model)
    assert regions["preprocess"] and regions["body"] and regions["tail"]


def test_onnx_matches_pytorch_on_images(backbone, exported, real_images) -> None:
    _, images, _ = real_images
    with TorchEngine(backbone, PREPROCESS) as ref, OnnxRuntimeEngine(exported.path) as ort_engine:
        a, b = ref.embed(images), ort_engine.embed(images)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    max_abs = float(np.abs(a - b).max())
    print(f"ONNX vs PyTorch: min cosine {cosine.min():.7f}, max abs diff {max_abs:.2e}")
    assert cosine.min() >= 0.9999
    assert max_abs < 1e-4


def test_fold_batchnorm_is_exact(backbone) -> None:
    import torch

    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    folded = fold_batchnorm(backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), backbone(x), atol=1e-4, rtol=1e-4)


def test_verify_rejects_training_mode_batchnorm_and_wrong_opset(backbone) -> None:
    model, _, _ = build_fp32_encoder(backbone, PREPROCESS, opset=17, exporter="torchscript")
    with pytest.raises(ValueError, match="opset"):
        verify_encoder(model, opset=18, image_size=IMAGE_SIZE, out_dim=64)
    bad = onnx.ModelProto.FromString(model.SerializeToString())
    bad.graph.node.append(onnx.helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1, name="bn"))
    with pytest.raises(ValueError, match="training-mode"):
        verify_encoder(bad, opset=17, image_size=IMAGE_SIZE, out_dim=64)


def test_explicit_exporter_refuses_a_changed_opset(backbone) -> None:
    # The dynamo exporter works at opset 18 natively and cannot down-convert this graph to 17; "auto"
    # falls back to TorchScript, an explicit choice must fail loudly instead of shipping opset 18.
    model, used, notes = build_fp32_encoder(backbone, PREPROCESS, opset=17, exporter="auto")
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    if used == "torchscript":
        assert notes, "a fallback must be explained"
        with pytest.raises(RuntimeError, match="opset"):
            build_fp32_encoder(backbone, PREPROCESS, opset=17, exporter="dynamo")


@pytest.mark.slow
def test_dynamo_exporter_at_its_native_opset(backbone, random_images, tmp_path) -> None:
    info = export_to(backbone, tmp_path / "d.onnx", opset=18, exporter="dynamo")
    assert info.exporter == "dynamo" and default_opset(info.path) == 18
    with TorchEngine(backbone, PREPROCESS) as ref, OnnxRuntimeEngine(info.path) as eng:
        assert (ref.embed(random_images) * eng.embed(random_images)).sum(1).min() >= 0.9999


def test_bad_preprocess_and_exporter(backbone) -> None:
    with pytest.raises(ValueError, match="missing keys"):
        build_fp32_encoder(backbone, {"image_size": 16})
    with pytest.raises(ValueError, match="exporter"):
        build_fp32_encoder(backbone, PREPROCESS, exporter="magic")


# --- optional float NCHW input layout (normalised upstream, no preprocessing nodes) ---------------------------


@pytest.fixture(scope="module")
def exported_float(backbone, tmp_path_factory):
    return export_to(backbone, tmp_path_factory.mktemp("onnx_float") / "encoder.onnx", exporter="torchscript",
                     input_layout="float_nchw")


def test_float_nchw_export_contract(exported_float) -> None:
    assert io_shapes(exported_float.path) == (("batch", 3, IMAGE_SIZE, IMAGE_SIZE), ("batch", 64))
    model = onnx.load(exported_float.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    regions = region_node_names(model)
    assert regions["preprocess"] == [] and regions["input"] == [] and regions["body"] and regions["tail"]
    assert not [n for n in model.graph.node if n.op_type == "Cast"]  # no uint8 handling left
    meta = read_metadata(model)
    assert (meta["input_format"], meta["input_layout"], meta["input_dtype"], meta["normalization_in_graph"]) == \
        ("float_nchw", "NCHW", "float32", "false")
    assert [float(v) for v in meta["mean"].split(",")] == PREPROCESS["mean"]
    assert [float(v) for v in meta["std"].split(",")] == PREPROCESS["std"]
    verify_encoder(model, opset=DEFAULT_OPSET, image_size=IMAGE_SIZE, out_dim=64, input_layout="float_nchw")
    with pytest.raises(ValueError, match="must be UINT8"):
        verify_encoder(model, opset=DEFAULT_OPSET, image_size=IMAGE_SIZE, out_dim=64)
    assert read_metadata(onnx.load(exported_float.path))["tail_precision"] == "fp32"


def test_uint8_export_records_layout(exported) -> None:
    model = onnx.load(exported.path)
    meta = read_metadata(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert (meta["input_format"], meta["normalization_in_graph"]) == ("uint8_nhwc", "true")


def test_float_nchw_matches_pytorch_on_normalised_input(backbone, exported_float, real_images) -> None:
    """Raw session on float NCHW normalised in NumPy vs the PyTorch reference: per-row cosine >= 0.9999."""
    import onnxruntime as ort
    from edge_encoder.device.engines import normalize_images

    _, images, _ = real_images
    x = normalize_images(images, PREPROCESS["mean"], PREPROCESS["std"])
    assert x.dtype == np.float32 and x.shape == (len(images), 3, IMAGE_SIZE, IMAGE_SIZE)
    session = ort.InferenceSession(str(exported_float.path), providers=["CPUExecutionProvider"])
    b = session.run(None, {"images": x})[0]
    with TorchEngine(backbone, PREPROCESS) as ref:
        a = ref.embed(images)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"float NCHW ONNX vs PyTorch: min cosine {cosine.min():.7f}, max abs diff {np.abs(a - b).max():.2e}")
    assert cosine.min() >= 0.9999 and float(np.abs(a - b).max()) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_uint8_and_float_layouts_give_the_same_embeddings(exported, exported_float, real_images) -> None:
    _, images, _ = real_images
    with OnnxRuntimeEngine(exported.path) as u8, OnnxRuntimeEngine(exported_float.path) as f32:
        assert f32.input_layout == "float_nchw" and u8.input_layout == "uint8_nhwc"
        assert f32.input_spec == u8.input_spec  # embed() takes uint8 NHWC for both
        a, b = u8.embed(images), f32.embed(images)
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)


def test_bad_input_layout(backbone) -> None:
    with pytest.raises(ValueError, match="input_layout"):
        build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript", input_layout="float_nhwc")
