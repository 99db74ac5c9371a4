"""TensorRT conformance: each rule fed a small hand-built graph that breaks it, and the real variants pass."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from edge_encoder.export.bundle import BundleImages, ParityGateError, export_bundle
from edge_encoder.export.config import ExportConfig
from edge_encoder.export.onnx_export import build_fp32_encoder
from edge_encoder.device.parity import DEFAULT_THRESHOLDS
from edge_encoder.export.precision import INT8_FLAVOURS, make_variant
from edge_encoder.export.dla_int8 import EXPLICIT_FILE, IMPLICIT_FILE, build_dla_int8
from edge_encoder.export.trt_conformance import (
    DLA_NATIVE,
    DLA_RECONSTRUCTED,
    RULES,
    SRC_DLA_OPS,
    Violation,
    bundle_conformance,
    check_tensorrt_graph,
)
from onnx import TensorProto, helper, numpy_helper

from tests.export.conftest import BACKBONE_CONFIG, PREPROCESS

PROFILE = {"min": 1, "opt": 32, "max": 64}
DLA = {"min": 8, "opt": 8, "max": 8}
F, H = TensorProto.FLOAT, TensorProto.FLOAT16
# The int8_trt recipe before issue 9: ORT's default placement, which quantizes conv biases to INT32.
OLD_INT8_TRT = dataclasses.replace(INT8_FLAVOURS["int8_trt"], placement="onnxruntime", float_input_convs=False)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, opset: int = 17,
           in_type: int = F, in_shape: list | None = None, out_type: int = F, out_shape: list | None = None,
           extra_inputs: list | None = None) -> onnx.ModelProto:
    """``images`` (batch, 3, 4, 4) -> nodes -> ``embeddings`` (batch, C)."""
    graph = helper.make_graph(
        nodes, "crafted",
        [helper.make_tensor_value_info("images", in_type, in_shape or ["batch", 3, 4, 4])] + (extra_inputs or []),
        [helper.make_tensor_value_info("embeddings", out_type, out_shape or ["batch", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_head(x: str, *, dtype=np.float32, conv_attrs: dict | None = None, weight_shape=(8, 3, 3, 3),
               pool: str = "pool") -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Conv -> Relu -> GlobalAveragePool -> Flatten into ``embeddings`` (the shape of our encoders)."""
    rng = np.random.default_rng(0)
    attrs = {"pads": [1, 1, 1, 1]} if conv_attrs is None else conv_attrs
    nodes = [helper.make_node("Conv", [x, "w", "b"], ["c"], name="conv", **attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name=pool),
             helper.make_node("Flatten", ["p"], ["embeddings"], name="flatten")]
    inits = [_init("w", rng.normal(size=weight_shape).astype(dtype)), _init("b", np.zeros(weight_shape[0], dtype))]
    return nodes, inits


def _qdq(x: str, out: str, name: str, scale=0.05, zp=None) -> tuple[list, list]:
    zp_arr = np.asarray(np.int8(0) if zp is None else zp)
    inits = [_init(f"{name}/s", np.float32(scale) if np.ndim(scale) == 0 else np.asarray(scale, np.float32)),
             _init(f"{name}/z", zp_arr)]
    return [helper.make_node("QuantizeLinear", [x, f"{name}/s", f"{name}/z"], [f"{name}/q"], name=f"{name}/Q"),
            helper.make_node("DequantizeLinear", [f"{name}/q", f"{name}/s", f"{name}/z"], [out], name=f"{name}/DQ")
            ], inits


def _found(model: onnx.ModelProto, profile=PROFILE, dla_batch=None) -> set[tuple[str, str]]:
    return {(v.rule, v.node) for v in check_tensorrt_graph(model, profile=profile, dla_batch=dla_batch)}


def test_rules_table_names_a_source_for_every_rule() -> None:
    assert RULES and all(r.source and r.summary for r in RULES.values())
    for rule in RULES.values():
        assert "http" in rule.source or "docs/CONTRACTS.md" in rule.source


def test_crafted_base_graph_is_clean() -> None:
    """The baseline every crafted violation starts from passes, so each test below breaks exactly its rule."""
    nodes, inits = _conv_head("images")
    assert _found(_model(nodes, inits)) == set()
    q, qi = _qdq("images", "xq", "in")
    nodes, inits = _conv_head("xq")
    assert _found(_model(q + nodes, qi + inits)) == set()


def test_opset_outside_the_parser_range() -> None:
    nodes, inits = _conv_head("images")
    assert _found(_model(nodes, inits, opset=21)) == {("opset", "<model>")}
    assert _found(_model(nodes, inits, opset=8)) == {("opset", "<model>")}


def test_unsupported_operator_and_custom_domain() -> None:
    nodes = [helper.make_node("Det", ["images"], ["d"], name="det"),
             helper.make_node("Flatten", ["d"], ["embeddings"], name="flatten")]
    assert ("operator", "det") in _found(_model(nodes, [], out_shape=["batch", 3]))
    nodes, inits = _conv_head("images")
    nodes[1] = helper.make_node("FusedRelu", ["c"], ["r"], name="relu", domain="com.example")
    model = _model(nodes, inits)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert _found(model) == {("operator", "relu")}


def test_operator_input_type_outside_its_supported_types() -> None:
    # Relu on an INT8 tensor: ONNX allows it, TensorRT's Relu takes FP32/FP16/BF16/INT32/INT64 only.
    q = [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="Q"),
         helper.make_node("Relu", ["q"], ["rq"], name="int8_relu"),
         helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["x"], name="DQ")]
    nodes, inits = _conv_head("x")
    model = _model(q + nodes, [_init("s", np.float32(0.1)), _init("z", np.int8(0))] + inits)
    assert _found(model) == {("operator_types", "int8_relu")}


def test_operator_restrictions() -> None:
    nodes, inits = _conv_head("images")
    pool = [helper.make_node("MaxPool", ["r"], ["m"], name="maxpool", kernel_shape=[2, 2], dilations=[2, 2])]
    nodes = nodes[:2] + pool + [helper.make_node("GlobalAveragePool", ["m"], ["p"], name="pool"), nodes[3]]
    assert _found(_model(nodes, inits)) == {("operator_restriction", "maxpool")}
    # ReduceMean (opset 18) whose axes come from a node instead of an initializer
    nodes, inits = _conv_head("images")
    nodes[2:3] = [helper.make_node("Identity", ["axes"], ["axes_copy"], name="axes_copy"),
                  helper.make_node("ReduceMean", ["r", "axes_copy"], ["p"], name="mean", keepdims=1)]
    assert _found(_model(nodes, inits + [_init("axes", np.array([2, 3], np.int64))], opset=18)) == \
        {("operator_restriction", "mean")}


def test_int32_bias_dequantize_is_caught() -> None:
    """ONNX Runtime's QuantizeBias=True pattern: an INT32 bias through DequantizeLinear into the Conv."""
    q, qi = _qdq("images", "xq", "in")
    nodes, inits = _conv_head("xq")
    inits[1] = _init("b_q", np.arange(8, dtype=np.int32))
    bias = [helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], name="conv.bias_DequantizeLinear",
                             axis=0)]
    model = _model(q + bias + nodes, qi + inits + [_init("b_s", np.full(8, 0.01, np.float32)),
                                                   _init("b_z", np.zeros(8, np.int32))])
    assert _found(model) == {("qdq_input_type", "conv.bias_DequantizeLinear"),
                             ("qdq_zero_point", "conv.bias_DequantizeLinear")}


def test_uint8_dequantize_and_uint8_zero_point() -> None:
    q, qi = _qdq("images", "xq", "in", zp=np.uint8(0))
    nodes, inits = _conv_head("xq")
    found = _found(_model(q + nodes, qi + inits))
    assert found == {("qdq_zero_point", "in/Q"), ("qdq_zero_point", "in/DQ"), ("qdq_input_type", "in/DQ"),
                     ("uint8_io", "in/Q"), ("uint8_io", "in/DQ")}


def test_nonzero_zero_point() -> None:
    q, qi = _qdq("images", "xq", "in", zp=np.int8(3))
    nodes, inits = _conv_head("xq")
    assert _found(_model(q + nodes, qi + inits)) == {("qdq_zero_point", "in/Q"), ("qdq_zero_point", "in/DQ")}


@pytest.mark.parametrize("scale", [0.0, -0.5, np.inf, np.nan])
def test_scale_not_positive_and_finite(scale) -> None:
    q, qi = _qdq("images", "xq", "in", scale=scale)
    nodes, inits = _conv_head("xq")
    assert _found(_model(q + nodes, qi + inits)) == {("qdq_scale", "in/Q"), ("qdq_scale", "in/DQ")}


def test_scale_computed_at_run_time() -> None:
    q, qi = _qdq("images", "xq", "in")
    q[0].input[1] = "s_abs"
    nodes, inits = _conv_head("xq")
    model = _model([helper.make_node("Abs", ["in/s"], ["s_abs"], name="abs")] + q + nodes, qi + inits)
    assert _found(model) == {("qdq_scale", "in/Q")}


def test_per_channel_scale_on_an_activation() -> None:
    q, qi = _qdq("images", "xq", "in", scale=[0.1, 0.2, 0.3], zp=np.zeros(3, np.int8))
    q[0].attribute.append(helper.make_attribute("axis", 1))
    q[1].attribute.append(helper.make_attribute("axis", 1))
    nodes, inits = _conv_head("xq")
    assert _found(_model(q + nodes, qi + inits)) == {("qdq_axis", "in/Q"), ("qdq_axis", "in/DQ")}


def test_per_channel_weight_scale_count_must_match_the_axis() -> None:
    q, qi = _qdq("images", "xq", "in")
    nodes, inits = _conv_head("xq")
    inits[0] = _init("w_q", np.ones((8, 3, 3, 3), np.int8))
    wdq = helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w/DQ", axis=0)
    model = _model(q + [wdq] + nodes, qi + inits + [_init("w_s", np.full(4, 0.01, np.float32)),
                                                    _init("w_z", np.zeros(4, np.int8))])
    assert _found(model) == {("qdq_axis", "w/DQ")}


def test_cast_to_an_unsupported_type() -> None:
    nodes, inits = _conv_head("x")
    casts = [helper.make_node("Cast", ["images"], ["d"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["d"], ["x"], name="to_float", to=F)]
    # the second Cast reads a DOUBLE, which Cast's supported types do not list either
    assert _found(_model(casts + nodes, inits)) == {("cast_type", "to_double"), ("operator_types", "to_float")}


def test_uint8_inside_the_network() -> None:
    nodes, inits = _conv_head("x")
    casts = [helper.make_node("Cast", ["images"], ["u"], name="to_u8", to=TensorProto.UINT8),
             helper.make_node("Cast", ["u"], ["x"], name="to_f32", to=F)]
    assert _found(_model(casts + nodes, inits)) == {("uint8_io", "to_u8"), ("uint8_io", "to_f32")}
    # a uint8 network input read by anything but a Cast
    nodes, inits = _conv_head("x")
    pre = [helper.make_node("Transpose", ["images"], ["t"], name="nhwc_to_nchw", perm=[0, 3, 1, 2]),
           helper.make_node("Cast", ["t"], ["x"], name="cast", to=F)]
    model = _model(pre + nodes, inits, in_type=TensorProto.UINT8, in_shape=["batch", 4, 4, 3])
    # (Transpose's supported types have no UINT8 either, and its UINT8 output is inside the network)
    assert _found(model) == {("uint8_io", "nhwc_to_nchw"), ("operator_types", "nhwc_to_nchw"), ("uint8_io", "cast")}


def test_dynamic_dimension_other_than_batch_and_bad_profiles() -> None:
    nodes, inits = _conv_head("images")
    assert _found(_model(nodes, inits, in_shape=["batch", 3, "height", 4])) == {("dynamic_dims", "images")}
    assert _found(_model(nodes, inits), profile={"min": 32, "opt": 8, "max": 64}) == \
        {("dynamic_dims", "images"), ("dynamic_dims", "embeddings")}
    static = _model(nodes, inits, in_shape=[4, 3, 4, 4], out_shape=[4, 8])
    assert _found(static) == {("dynamic_dims", "images"), ("dynamic_dims", "embeddings")}
    assert _found(static, profile={"min": 4, "opt": 4, "max": 4}) == set()
    with pytest.raises(ValueError, match="min/opt/max"):
        check_tensorrt_graph(static, profile={"min": 4})


def test_output_must_be_float32() -> None:
    nodes, inits = _conv_head("images")
    nodes[-1].output[0] = "f"
    nodes.append(helper.make_node("Cast", ["f"], ["embeddings"], name="to_half", to=H))
    assert _found(_model(nodes, inits, out_type=H)) == {("output_dtype", "embeddings")}


def _fp16_head(x: str = "xh", **kw) -> tuple[list, list]:
    nodes, inits = _conv_head(x, dtype=np.float16, **kw)
    cast_in = helper.make_node("Cast", ["images"], [x], name="input/cast_fp16", to=H)
    nodes[-1].output[0] = "fh"
    cast_out = helper.make_node("Cast", ["fh"], ["embeddings"], name="tail/cast_fp32", to=F)
    return [cast_in] + nodes + [cast_out], inits


def test_dla_needs_a_static_profile_and_limits() -> None:
    nodes, inits = _fp16_head()
    assert _found(_model(nodes, inits), profile=DLA, dla_batch=8) == set()
    assert _found(_model(nodes, inits), profile=PROFILE, dla_batch=8) == {("dla_static_shape", "images")}
    big = {"min": 5000, "opt": 5000, "max": 5000}
    assert _found(_model(nodes, inits), profile=big, dla_batch=5000) == {("dla_limits", "images")}
    wide, winits = _fp16_head()
    model = _model(wide, winits, in_shape=["batch", 3, 4, 9000])
    assert ("dla_limits", "images") in _found(model, profile=DLA, dla_batch=8)


def test_dla_refuses_an_fp32_graph() -> None:
    nodes, inits = _conv_head("images")
    assert _found(_model(nodes, inits), profile=DLA, dla_batch=8) == {("dla_precision", "conv")}


def test_dla_layer_outside_the_native_set() -> None:
    nodes, inits = _fp16_head()
    nodes.insert(3, helper.make_node("Sqrt", ["r"], ["r2"], name="sqrt"))
    nodes[4].input[0] = "r2"
    assert _found(_model(nodes, inits), profile=DLA, dla_batch=8) == {("dla_layer", "sqrt")}


def test_dla_convolution_limits() -> None:
    nodes, inits = _fp16_head(conv_attrs={"strides": [9, 9], "pads": [3, 3, 3, 3]})
    violations = check_tensorrt_graph(_model(nodes, inits), profile=DLA, dla_batch=8)
    assert {(v.rule, v.node) for v in violations} == {("dla_conv", "conv")}
    assert "stride [9, 9]" in violations[0].detail and "not below the kernel" in violations[0].detail


def test_dla_pooling_window() -> None:
    nodes, inits = _fp16_head()
    nodes.insert(3, helper.make_node("MaxPool", ["r"], ["m"], name="maxpool", kernel_shape=[9, 9], pads=[4, 4, 4, 4]))
    nodes[4].input[0] = "m"
    assert _found(_model(nodes, inits), profile=DLA, dla_batch=8) == {("dla_pool", "maxpool")}


def _int8_head(*, quantize_outputs: bool) -> tuple[list, list]:
    """images -> Q/DQ -> Conv (INT8 weights + per-channel DQ) -> Relu -> GlobalAveragePool -> Flatten; with
    ``quantize_outputs`` also Q/DQ on the Conv and Relu outputs (Q/DQ on every trunk tensor, as for TensorRT 11)."""
    nodes, inits = _conv_head("xq")
    w = numpy_helper.to_array(inits[0])
    scale = (np.abs(w.reshape(8, -1)).max(1) / 127).astype(np.float32)
    q = np.rint(w / scale[:, None, None, None]).astype(np.int8)
    inits = [_init("wq", q), _init("ws", scale), _init("wz", np.zeros(8, np.int8)), inits[1]]
    weight_dq = helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="w/DQ", axis=0)
    nodes[0].input[1] = "wd"
    qdq, qinits = _qdq("images", "xq", "in")
    if quantize_outputs:
        for tensor, reader in (("c", "relu"), ("r", "pool")):
            pair, pinits = _qdq(tensor, f"{tensor}d", tensor)
            at = next(i for i, n in enumerate(nodes) if n.name == reader)
            nodes[at].input[0] = f"{tensor}d"
            nodes = nodes[:at] + pair + nodes[at:]
            qinits += pinits
    return qdq + [weight_dq] + nodes, inits + qinits


def test_dla_operator_table_marks_qdq_reconstructed_not_native() -> None:
    """NVIDIA's Orin DLA table: QuantizeLinear/DequantizeLinear 'Reconstruction' (collapsed into INT8 scales)."""
    assert not DLA_RECONSTRUCTED & DLA_NATIVE and DLA_RECONSTRUCTED == {"QuantizeLinear", "DequantizeLinear"}
    assert "Deep-Learning-Accelerator-SW" in SRC_DLA_OPS and "Reconstruction" in RULES["dla_layer"].summary
    nodes, inits = _int8_head(quantize_outputs=True)
    model = _model(nodes, inits)
    t10 = check_tensorrt_graph(model, profile=DLA, dla_batch=8)  # TensorRT 10: implicit INT8 only
    qdq = {n.name for n in nodes if n.op_type in DLA_RECONSTRUCTED}
    assert {(v.rule, v.node) for v in t10} == {("dla_layer", name) for name in qdq}
    assert "'Reconstruction', not native" in t10[0].detail
    assert check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_target="tensorrt11") == []


def test_tensorrt11_dla_needs_qdq_on_every_trunk_tensor() -> None:
    """Model-Optimizer target_dla: Q/DQ in front of every activation a trunk layer (or the head) reads."""
    nodes, inits = _int8_head(quantize_outputs=False)  # int8_trt's GPU placement: Q/DQ on the conv input only
    violations = check_tensorrt_graph(_model(nodes, inits), profile=DLA, dla_batch=8, dla_target="tensorrt11")
    assert [(v.rule, v.node) for v in violations] == [("dla_qdq_placement", "relu")]
    assert "2 input(s)" in violations[0].detail  # the Relu's input and the pooling head's input
    assert RULES["dla_qdq_placement"].source.count("Model-Optimizer") == 1
    with pytest.raises(ValueError, match="dla_target"):
        check_tensorrt_graph(_model(nodes, inits), profile=DLA, dla_batch=8, dla_target="tensorrt12")


def test_tensorrt10_dla_int8_needs_a_scale_for_every_trunk_tensor() -> None:
    """The Q/DQ-free graph is INT8 by its calibration cache: every trunk tensor needs a scale there."""
    nodes, inits = _conv_head("images")
    model = _model(nodes, inits)
    assert check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_scales={"images", "c", "r"}) == []
    missing = check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_scales={"images", "r"})
    assert [(v.rule, v.node) for v in missing] == [("dla_precision", "conv"), ("dla_calibration", "c")]
    assert [(v.rule, v.node) for v in check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_scales={"c", "r"})] \
        == [("dla_precision", "conv"), ("dla_calibration", "images")]


def test_violation_records_its_source() -> None:
    nodes, inits = _conv_head("images")
    (v,) = check_tensorrt_graph(_model(nodes, inits, opset=21), profile=PROFILE)
    assert isinstance(v, Violation) and v.source == RULES["opset"].source and v.to_dict()["rule"] == "opset"


# --- the real encoder graphs ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["uint8_nhwc", "float_nchw"])
def fp32_encoder(request, backbone) -> onnx.ModelProto:
    return build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript", input_layout=request.param)[0]


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8_trt"])
def test_every_shipped_tensorrt_variant_conforms(variant, fp32_encoder, random_images) -> None:
    model = make_variant(fp32_encoder, variant, random_images)
    assert check_tensorrt_graph(model, profile=PROFILE) == []
    if variant == "int8_trt":  # the DLA bundle's int8_trt quantizes its stem (ExportConfig with dla_batch)
        config = ExportConfig(dla_batch=8).quant_configs[variant]
        model = make_variant(fp32_encoder, variant, random_images, config)
        # int8_trt itself is not a DLA graph: its Q/DQ are 'Reconstruction' on Orin DLA (TensorRT 10 refuses them
        # there), and its convolution outputs carry no Q/DQ (a strongly typed TensorRT 11 build runs them in float)
        qdq = {n.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
        t10 = check_tensorrt_graph(model, profile=DLA, dla_batch=8)
        assert {v.rule for v in t10} == {"dla_layer"} and {v.node for v in t10} == qdq
        t11 = check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_target="tensorrt11")
        assert [v.rule for v in t11] == ["dla_qdq_placement"]
        # ... its DLA graphs are: the Q/DQ-free one with the cache's scales, the one with Q/DQ on every DLA tensor
        graphs = build_dla_int8(fp32_encoder, model, random_images, config)
        assert check_tensorrt_graph(graphs.implicit, profile=DLA, dla_batch=8, dla_scales=graphs.scales) == []
        assert check_tensorrt_graph(graphs.explicit, profile=DLA, dla_batch=8, dla_target="tensorrt11") == []
        for graph in (graphs.implicit, graphs.explicit):
            assert check_tensorrt_graph(graph, profile=PROFILE) == []
        return
    for target in ("tensorrt10", "tensorrt11"):
        dla = check_tensorrt_graph(model, profile=DLA, dla_batch=8, dla_target=target)
        if variant == "fp32":  # the FP32 graph cannot run on the DLA: refused in one violation
            assert [v.rule for v in dla] == ["dla_precision"]
        else:
            assert dla == []


def test_dynamo_export_conforms(backbone, random_images) -> None:
    fp32 = build_fp32_encoder(backbone, PREPROCESS, exporter="dynamo", opset=18)[0]
    for variant in ("fp32", "fp16", "int8_trt"):
        assert check_tensorrt_graph(make_variant(fp32, variant, random_images), profile=PROFILE) == [], variant


def test_old_int8_trt_recipe_is_caught(fp32_encoder, random_images) -> None:
    model = make_variant(fp32_encoder, "int8_trt", random_images, quant_config=OLD_INT8_TRT)
    violations = check_tensorrt_graph(model, profile=PROFILE)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    bias_dq = {v.node for v in violations if v.rule == "qdq_input_type"}
    assert len(bias_dq) == convs and all(n.endswith("bias_DequantizeLinear") for n in bias_dq)
    entry, failures = bundle_conformance(model, "int8_trt", profile=PROFILE)
    assert entry["passed"] is False and entry["violations"] and f"tensorrt:qdq_input_type at {min(bias_dq)}" in failures
    assert bundle_conformance(model, "int8_cpu", profile=PROFILE) == (None, [])


def test_bundle_fails_a_nonconformant_variant_like_parity(backbone, real_images, tmp_path) -> None:
    calib, parity, labels = real_images
    relaxed = {v: dataclasses.replace(t, min_top1_agreement=0.0, min_top10_overlap=0.0, max_knn_accuracy_drop=None)
               for v, t in DEFAULT_THRESHOLDS.items()}
    config = ExportConfig(exporter="torchscript", variants=("fp32", "int8_trt", "int8_cpu"), thresholds=relaxed,
                          quant_configs={"int8_trt": OLD_INT8_TRT})
    out = tmp_path / "deploy"
    with pytest.raises(ParityGateError) as err:
        export_bundle((backbone, PREPROCESS, BACKBONE_CONFIG), out, BundleImages(calib, parity, labels), config)
    assert set(err.value.failed) == {"int8_trt"}
    assert any(f.startswith("tensorrt:qdq_input_type at ") for f in err.value.failed["int8_trt"])
    variants = json.loads((out / "manifest.json").read_text())["variants"]
    trt = variants["int8_trt"]
    assert trt["passed"] is False and trt["tensorrt_conformance"]["passed"] is False
    assert trt["tensorrt_conformance"]["checked"].startswith("TensorRT 10.x/11 ONNX parser rules")
    assert {v["rule"] for v in trt["tensorrt_conformance"]["violations"]} >= {"qdq_input_type"}
    assert variants["fp32"]["tensorrt_conformance"] == {"passed": True, "checked": trt["tensorrt_conformance"]["checked"],
                                                        "violations": []}
    assert variants["fp32"]["passed"] and variants["int8_cpu"]["passed"]
    assert "tensorrt_conformance" not in variants["int8_cpu"]


def test_bundle_hook_checks_dla_only_for_the_dla_variants(fp32_encoder, random_images) -> None:
    """export.dla_batch = B: fp16/int8_trt are checked under the DLA plan's static profile; fp32 gets no DLA plan."""
    dla_int8 = dataclasses.replace(INT8_FLAVOURS["int8_trt"], float_input_convs=False)  # as ExportConfig picks for DLA
    assert ExportConfig(variants=("fp32", "int8_trt"), dla_batch=8).quant_configs["int8_trt"] == dla_int8
    for variant in ("fp32", "fp16", "int8_trt"):
        model = make_variant(fp32_encoder, variant, random_images, dla_int8 if variant == "int8_trt" else None)
        graphs = _dla_graphs(fp32_encoder, model, random_images, dla_int8) if variant == "int8_trt" else None
        entry, failures = bundle_conformance(model, variant, profile=PROFILE, dla_batch=8, dla_graphs=graphs)
        assert entry["passed"] and not failures, (variant, failures)
        assert ("dla_batch" in entry) == (variant != "fp32")
        assert ("dla_graphs" in entry) == (variant == "int8_trt")
        assert bundle_conformance(model, variant, profile=PROFILE, dla_batch=0)[0] == \
            {"passed": True, "checked": entry["checked"], "violations": []}
    # without its DLA graphs the Q/DQ graph is what a DLA plan would build from: refused, Q/DQ not being native
    entry, failures = bundle_conformance(model, "int8_trt", profile=PROFILE, dla_batch=8)
    assert not entry["passed"] and any(f.startswith("tensorrt:dla_layer at ") for f in failures)
    nodes, inits = _conv_head("images")  # an FP32 graph shipped as the fp16 variant would be refused for DLA
    entry, failures = bundle_conformance(_model(nodes, inits), "fp16", profile=PROFILE, dla_batch=8)
    assert failures == ["tensorrt:dla_precision at conv"] and entry["dla_batch"] == 8
    # the GPU default keeps the stem conv float: fine for GPU plans, refused for DLA (FP32 does not run there)
    float_stem = make_variant(fp32_encoder, "int8_trt", random_images)
    assert bundle_conformance(float_stem, "int8_trt", profile=PROFILE, dla_batch=0)[0]["passed"]
    entry, failures = bundle_conformance(float_stem, "int8_trt", profile=PROFILE, dla_batch=8)
    assert any(f.startswith("tensorrt:dla_precision at ") for f in failures)
    # its DLA graphs quantize the stem too (calibrated, per-channel weights): they pass
    graphs = _dla_graphs(fp32_encoder, float_stem, random_images, INT8_FLAVOURS["int8_trt"])
    entry, failures = bundle_conformance(float_stem, "int8_trt", profile=PROFILE, dla_batch=8, dla_graphs=graphs)
    assert entry["passed"] and not failures, failures
    # a violation in a DLA graph fails the variant and names the file
    file, graph, scales = graphs["tensorrt10"]
    add_output = next(t for t in sorted(scales) if t.endswith("/Add_output_0"))  # no convolution reads or writes it
    graphs["tensorrt10"] = (file, graph, scales - {add_output})
    entry, failures = bundle_conformance(float_stem, "int8_trt", profile=PROFILE, dla_batch=8, dla_graphs=graphs)
    assert not entry["passed"] and len(failures) == 1
    assert failures[0].startswith("tensorrt:dla_calibration at ") and failures[0].endswith("(encoder_int8_trt_dla.onnx)")
    assert entry["violations"][0]["detail"].startswith("[encoder_int8_trt_dla.onnx, tensorrt10] ")


def _dla_graphs(fp32, int8_model, images, config) -> dict:
    graphs = build_dla_int8(fp32, int8_model, images, config)
    return {"tensorrt10": (IMPLICIT_FILE, graphs.implicit, set(graphs.scales)),
            "tensorrt11": (EXPLICIT_FILE, graphs.explicit, None)}
