"""One contract suite over every engine available on this machine (docs/CONTRACTS.md)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from edge_encoder.core.contract import Preprocess
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import build_fp32_encoder, save_model
from edge_encoder.export.precision import make_variant

from tests.export.conftest import IMAGE_SIZE, PREPROCESS

ENGINES = ["pytorch_fp32", "onnx_fp32", "onnx_fp16", "onnx_int8_trt", "onnx_int8_cpu", "onnx_float_nchw_fp32",
           "onnx_float_nchw_int8_cpu", pytest.param("tensorrt_fp32", marks=pytest.mark.tensorrt)]


@pytest.fixture(scope="module")
def model_dir(backbone, random_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    fp32 = build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript")[0]
    for variant in ("fp32", "fp16", "int8_trt", "int8_cpu"):
        save_model(make_variant(fp32, variant, random_images), out / f"encoder_{variant}.onnx")
    # float NCHW exports: the engine normalises uint8 NHWC itself, so the same contract applies
    fp32_float = build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript", input_layout="float_nchw")[0]
    for variant in ("fp32", "int8_cpu"):
        save_model(make_variant(fp32_float, variant, random_images), out / f"encoder_float_nchw_{variant}.onnx")
    return out


@pytest.fixture(params=ENGINES)
def engine(request, backbone, model_dir):
    name = request.param
    if name == "pytorch_fp32":
        eng = TorchEngine(backbone, PREPROCESS)
    elif name.startswith("onnx_"):
        eng = OnnxRuntimeEngine(model_dir / f"encoder_{name[5:]}.onnx")
    else:
        if importlib.util.find_spec("tensorrt") is None:
            pytest.skip("tensorrt is not installed (pip install -e .[tensorrt] on an NVIDIA machine)")
        from edge_encoder.device.tensorrt import TensorRTEngine, build_engine

        plan = build_engine(model_dir / "encoder_fp32.onnx", model_dir / "encoder_fp32.plan")
        eng = TensorRTEngine(plan, name=name)
    with eng:
        yield eng


def test_shape_dtype_and_norm(engine, random_images) -> None:
    out = engine.embed(random_images)
    assert out.dtype == np.float32 and out.shape == (len(random_images), 64)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
    spec = engine.input_spec
    assert (spec.height, spec.width, spec.channels, spec.dtype, spec.layout) == (IMAGE_SIZE, IMAGE_SIZE, 3, "uint8", "NHWC")
    assert isinstance(engine.name, str) and engine.name


def test_deterministic(engine, random_images) -> None:
    np.testing.assert_array_equal(engine.embed(random_images), engine.embed(random_images))


def test_batch_size_invariance(engine, random_images) -> None:
    full = engine.embed(random_images)
    parts = np.concatenate([engine.embed(random_images[i:i + 5]) for i in range(0, len(random_images), 5)])
    single = engine.embed(random_images[3:4])
    np.testing.assert_allclose(parts, full, atol=1e-5)
    np.testing.assert_allclose(single[0], full[3], atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, IMAGE_SIZE, IMAGE_SIZE), np.uint8), "shape"),
    (np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32), "dtype"),
    (np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8), "channels"),
    (np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), "empty batch"),
    (np.zeros((2, IMAGE_SIZE + 1, IMAGE_SIZE, 3), np.uint8), "16x16"),
    (np.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8), "channels"),  # NCHW given
])
def test_bad_input_raises_value_error(engine, bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        engine.embed(bad)


def test_onnx_engine_source_and_name(model_dir) -> None:
    with OnnxRuntimeEngine(model_dir / "encoder_int8_cpu.onnx") as eng:
        assert eng.name == "onnx_int8_cpu" and eng.source_path == model_dir / "encoder_int8_cpu.onnx"
    with pytest.raises(ValueError, match="not found"):
        OnnxRuntimeEngine(model_dir / "missing.onnx")


def test_float_nchw_engine_normalises_with_metadata_or_given_preprocess(backbone, model_dir, random_images, tmp_path) -> None:
    import onnx
    from edge_encoder.export.onnx_export import set_metadata

    with OnnxRuntimeEngine(model_dir / "encoder_float_nchw_fp32.onnx") as eng, TorchEngine(backbone, PREPROCESS) as ref:
        assert eng.name == "onnx_fp32" and eng.input_layout == "float_nchw"
        assert (eng.embed(random_images) * ref.embed(random_images)).sum(1).min() >= 0.9999
        ours = eng.embed(random_images)
    # Without mean/std in the metadata the engine refuses, unless they are passed (e.g. from the manifest).
    model = onnx.load(model_dir / "encoder_float_nchw_fp32.onnx")
    del model.metadata_props[:]
    set_metadata(model, {})
    save_model(model, tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="normalisation"):
        OnnxRuntimeEngine(tmp_path / "bare.onnx")
    with OnnxRuntimeEngine(tmp_path / "bare.onnx", preprocess=PREPROCESS) as eng:
        np.testing.assert_array_equal(eng.embed(random_images), ours)
    with OnnxRuntimeEngine(tmp_path / "bare.onnx", preprocess=Preprocess.from_dict(PREPROCESS)) as eng:
        np.testing.assert_array_equal(eng.embed(random_images), ours)


def test_torch_engine_takes_the_typed_preprocess_and_its_stored_form_alike(backbone, random_images) -> None:
    """The dict form (older callers) is read into the same Preprocess: same embeddings, same cache key."""
    with TorchEngine(backbone, Preprocess.from_dict(PREPROCESS)) as typed, TorchEngine(backbone, PREPROCESS) as plain:
        assert typed.cache_token == plain.cache_token and typed.input_spec == plain.input_spec
        np.testing.assert_array_equal(typed.embed(random_images), plain.embed(random_images))
    with pytest.raises(ValueError, match="key 'preprocess.std' must be"):
        TorchEngine(backbone, {**PREPROCESS, "std": [0.2, 0.2]})
