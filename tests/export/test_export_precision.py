from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import (
    build_fp32_encoder,
    read_metadata,
    save_model,
)
from edge_encoder.device.parity import DEFAULT_THRESHOLDS, compare_embeddings
from edge_encoder.export.precision import (
    INT8_FLAVOURS,
    input_convs,
    make_variant,
    select_calibration_indices,
)
from onnx import numpy_helper

from tests.export.conftest import PREPROCESS


def zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every zero-point initializer used by a QuantizeLinear/DequantizeLinear node, by tensor name (read straight
    from the graph, independently of ``export.trt_conformance``, which gates the same property in the product)."""
    inits = {t.name: t for t in model.graph.initializer}
    found: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            found[node.input[2]] = numpy_helper.to_array(inits[node.input[2]])
    return found


@pytest.fixture(scope="module")
def fp32_model(backbone) -> onnx.ModelProto:
    return build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript")[0]


@pytest.fixture(scope="module")
def reference(backbone, real_images) -> np.ndarray:
    with TorchEngine(backbone, PREPROCESS) as ref:
        return ref.embed(real_images[1])


def _embed(model: onnx.ModelProto, images: np.ndarray, tmp_path) -> np.ndarray:
    path = tmp_path / "m.onnx"
    save_model(model, path)
    with OnnxRuntimeEngine(path) as engine:
        return engine.embed(images)


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8_trt", "int8_cpu"])
def test_variant_passes_its_parity_gate(variant, fp32_model, reference, real_images, tmp_path) -> None:
    calib, images, labels = real_images
    model = make_variant(fp32_model, variant, calib)
    onnx.checker.check_model(model, full_check=True)
    assert read_metadata(model)["precision"] == variant
    thresholds = DEFAULT_THRESHOLDS[variant]
    if variant.startswith("int8"):
        # A random-init net maps all images into a narrow cone (mean pairwise cosine ~0.98 here), so its
        # nearest neighbours are far more fragile than a trained encoder's: relax only the neighbour gates.
        thresholds = dataclasses.replace(thresholds, min_top1_agreement=0.5, min_top10_overlap=0.7)
    report = compare_embeddings(reference, _embed(model, images, tmp_path), labels, thresholds)
    print(variant, {k: round(v, 5) for k, v in report.to_dict().items() if isinstance(v, float)})
    assert report.passed, report.failures


def test_fp16_keeps_preprocessing_and_tail_fp32(fp32_model) -> None:
    model = make_variant(fp32_model, "fp16")
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert inits["preprocess/bias"] == onnx.TensorProto.FLOAT and inits["tail/eps"] == onnx.TensorProto.FLOAT
    body_weights = [t for n, t in inits.items() if not n.startswith(("preprocess/", "tail/"))]
    assert body_weights and set(body_weights) == {onnx.TensorProto.FLOAT16}
    casts = {n.name: n.attribute[0].i for n in model.graph.node if n.op_type == "Cast"}
    assert casts["preprocess/cast_fp16"] == onnx.TensorProto.FLOAT16 and casts["tail/cast_fp32"] == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_int8_trt_has_only_zero_zero_points_and_int8(fp32_model, real_images, method, capsys) -> None:
    config = dataclasses.replace(INT8_FLAVOURS["int8_trt"], calibrate_method=method)
    model = make_variant(fp32_model, "int8_trt", real_images[0], quant_config=config)
    assert f"calib={method}" in {p.key: p.value for p in model.metadata_props}["edge_encoder.quantization"]
    assert capsys.readouterr().out == ""  # ORT's histogram calibrators print progress; kept off our stdout
    zps = zero_points(model)
    assert zps, "expected QDQ nodes"
    for name, zp in zps.items():
        assert zp.dtype == np.int8, (name, zp.dtype)  # INT32 (bias) zero-points: TensorRT refuses them
        assert not np.any(zp), f"non-zero zero-point in {name}"
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert not [n for n in qdq if n.name.startswith(("preprocess/", "tail/"))]


def _downstream(model: onnx.ModelProto, op_types: set[str]) -> set[str]:
    """Names of the nodes of ``op_types`` and of every node after them."""
    producer = {out: n for n in model.graph.node for out in n.output}
    after: set[str] = set()
    for node in model.graph.node:
        if node.op_type in op_types or any(i in producer and producer[i].name in after for i in node.input):
            after.add(node.name)
    return after


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_int8_trt_is_what_tensorrt_parses(backbone, real_images, exporter) -> None:
    """Issue 9: INT8-only DequantizeLinear inputs, zero-points 0, FP32 biases, no Q/DQ from the pooling on."""
    fp32 = build_fp32_encoder(backbone, PREPROCESS, exporter=exporter, opset=18 if exporter == "dynamo" else 17)[0]
    model = make_variant(fp32, "int8_trt", real_images[0])
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    types = {t.name: t.data_type for t in model.graph.initializer}
    types.update({p.output[0]: onnx.TensorProto.INT8 for p in model.graph.node if p.op_type == "QuantizeLinear"})
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(types[n.input[0]] == onnx.TensorProto.INT8 for n in dq)
    assert all(not np.any(numpy_helper.to_array(inits[n.input[2]])) for n in model.graph.node
               if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(inits[c.input[2]].data_type == onnx.TensorProto.FLOAT for c in convs)  # biases stay FP32
    stem = set(input_convs(model))
    assert len(stem) == 1 and convs[0].name in stem  # the stem conv reads the image and stays FP32
    assert all(producer[c.input[0]].op_type == producer[c.input[1]].op_type == "DequantizeLinear"
               for c in convs if c.name not in stem)
    assert inits[convs[0].input[1]].data_type == onnx.TensorProto.FLOAT
    assert producer[convs[0].input[0]].op_type != "DequantizeLinear"
    tail = _downstream(model, {"GlobalAveragePool", "ReduceMean"}) | {n.name for n in model.graph.node
                                                                      if n.name.startswith("tail/")}
    assert tail and not [n.name for n in model.graph.node if n.name in tail and n.op_type.endswith("QuantizeLinear")]
    for add in (n for n in model.graph.node if n.op_type == "Add" and not n.name.startswith("preprocess/")):
        # residual Add: the Conv branch feeds it directly (Conv + Add fuse), the skip branch through a Q/DQ
        assert sorted(producer[i].op_type for i in add.input) == ["Conv", "DequantizeLinear"], add.name


def test_int8_cpu_is_u8s8(fp32_model, real_images) -> None:
    model = make_variant(fp32_model, "int8_cpu", real_images[0])
    inits = {t.name: t for t in model.graph.initializer}
    act = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = [inits[n.input[2]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert act and {t.data_type for t in act} == {onnx.TensorProto.UINT8}
    assert weights and any(len(t.dims) == 1 and t.dims[0] > 1 for t in weights)  # per-channel


def test_calibration_indices_are_deterministic() -> None:
    a, b = select_calibration_indices(1000, 64, seed=3), select_calibration_indices(1000, 64, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 64 and np.all(np.diff(a) > 0)
    assert len(select_calibration_indices(10, 64)) == 10


def test_int8_rejects_bad_calibration(fp32_model) -> None:
    with pytest.raises(ValueError, match="calibration_images"):
        make_variant(fp32_model, "int8_cpu", np.zeros((4, 16, 16, 3), np.float32))


@pytest.mark.parametrize("variant", ["int8_trt", "int8_cpu"])
def test_stem_stays_fp32_unless_asked(fp32_model, real_images, variant) -> None:
    """The convolution reading the normalised image is left float by default; float_input_convs=False quantizes it."""
    (stem,) = input_convs(fp32_model)
    assert stem == next(n.name for n in fp32_model.graph.node if n.op_type == "Conv")
    for keep_float in (True, False):
        cfg = dataclasses.replace(INT8_FLAVOURS[variant], float_input_convs=keep_float)
        model = make_variant(fp32_model, variant, real_images[0][:32], cfg)
        producer = {out: n for n in model.graph.node for out in n.output}
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        assert (producer.get(conv.input[1]) is None) == keep_float, (variant, keep_float)
        assert ("stem=fp32" in read_metadata(model)["quantization"]) == keep_float


# --- the same variants from a float NCHW export (no preprocessing nodes; calibrated on normalised floats) ----


@pytest.fixture(scope="module")
def fp32_float_model(backbone) -> onnx.ModelProto:
    return build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript", input_layout="float_nchw")[0]


@pytest.mark.parametrize("variant", ["fp16", "int8_trt", "int8_cpu"])
def test_float_nchw_variant_passes_its_parity_gate(variant, fp32_float_model, reference, real_images, tmp_path) -> None:
    calib, images, labels = real_images
    model = make_variant(fp32_float_model, variant, calib)
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(model)
    assert meta["precision"] == variant and meta["input_format"] == "float_nchw"
    inp = model.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [3, 16, 16]
    assert not [n for n in model.graph.node if n.name.startswith("preprocess/")]
    thresholds = DEFAULT_THRESHOLDS[variant]
    if variant.startswith("int8"):  # same relaxation as test_variant_passes_its_parity_gate (random-init net)
        thresholds = dataclasses.replace(thresholds, min_top1_agreement=0.5, min_top10_overlap=0.7)
    report = compare_embeddings(reference, _embed(model, images, tmp_path), labels, thresholds)
    print("float_nchw", variant, {k: round(v, 5) for k, v in report.to_dict().items() if isinstance(v, float)})
    assert report.passed, report.failures


def test_float_nchw_fp16_casts_the_graph_input_and_keeps_tail_fp32(fp32_float_model) -> None:
    model = make_variant(fp32_float_model, "fp16")
    casts = {n.name: n for n in model.graph.node if n.op_type == "Cast"}
    assert casts["input/cast_fp16"].input[0] == "images" and casts["input/cast_fp16"].attribute[0].i == onnx.TensorProto.FLOAT16
    assert casts["tail/cast_fp32"].attribute[0].i == onnx.TensorProto.FLOAT
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert inits["tail/eps"] == onnx.TensorProto.FLOAT
    assert {t for n, t in inits.items() if not n.startswith("tail/")} == {onnx.TensorProto.FLOAT16}
    out = model.graph.output[0].type.tensor_type.elem_type
    assert model.graph.input[0].type.tensor_type.elem_type == out == onnx.TensorProto.FLOAT


def test_float_nchw_int8_trt_zero_points_and_normalised_calibration(fp32_float_model, fp32_model, real_images) -> None:
    from edge_encoder.device.engines import normalize_images
    from edge_encoder.export.precision import _calibration_normalize, _ImageReader

    calib = real_images[0]
    norm = _calibration_normalize(fp32_float_model)
    assert norm == (tuple(PREPROCESS["mean"]), tuple(PREPROCESS["std"]))
    assert _calibration_normalize(fp32_model) is None  # uint8 encoders calibrate on raw pixels
    first = _ImageReader(calib, 32, norm).get_next()["images"]
    np.testing.assert_array_equal(first, normalize_images(calib[:32], PREPROCESS["mean"], PREPROCESS["std"]))
    model = make_variant(fp32_float_model, "int8_trt", calib)
    zps = zero_points(model)
    assert zps and not any(np.any(zp) for zp in zps.values())
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert not [n for n in qdq if n.name.startswith(("preprocess/", "tail/"))]
    (stem,) = input_convs(model)  # the float graph input feeds the stem conv directly; it stays FP32
    assert not [n for n in qdq if n.output[0] in next(c for c in model.graph.node if c.name == stem).input]


def test_calibration_runs_batch_by_batch_with_the_same_min_max(fp32_model, real_images) -> None:
    """One batch per calibration pass (bounded memory) must give min/max the very ranges of a single pass."""
    import edge_encoder.export.precision as precision

    images = np.concatenate([real_images[0]] * 3)[:80]  # 3 batches of 32, the last one short
    minmax = dataclasses.replace(INT8_FLAVOURS["int8_cpu"], calibrate_method="minmax", float_input_convs=False)
    strided = make_variant(fp32_model, "int8_cpu", images, quant_config=minmax)
    reader = precision._ImageReader(images, 32)
    assert len(reader) == 3 and [len(b["images"]) for b in iter(reader.get_next, None)] == [32, 32, 16]
    reader.set_range(1, 2)
    assert [len(b["images"]) for b in iter(reader.get_next, None)] == [32]
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in strided.graph.initializer if t.name.endswith("_scale")}
    ranges = _single_pass_scales(fp32_model, images)
    assert scales.keys() == ranges.keys()
    for name, value in ranges.items():
        np.testing.assert_array_equal(scales[name], value, err_msg=name)


def _single_pass_scales(fp32_model, images) -> dict[str, np.ndarray]:
    """The same quantization with ONNX Runtime's default single collection pass (a reader without set_range)."""
    import tempfile
    from pathlib import Path

    from edge_encoder.export.onnx_export import region_node_names
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Plain:
        def __init__(self) -> None:
            self.batches = iter([images[i:i + 32] for i in range(0, len(images), 32)])

        def get_next(self):  # noqa: ANN202
            batch = next(self.batches, None)
            return None if batch is None else {"images": np.ascontiguousarray(batch)}

    regions = region_node_names(fp32_model)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        onnx.save(fp32_model, src)
        quantize_static(str(src), str(dst), Plain(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=regions["preprocess"] + regions["input"] + regions["tail"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        model = onnx.load(dst)
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")}
