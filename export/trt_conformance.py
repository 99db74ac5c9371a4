"""TensorRT conformance of an ONNX graph, checked at export time without TensorRT.

``check_tensorrt_graph`` reads a TensorRT-bound variant (``fp32``, ``fp16``, ``int8_trt``) against the documented
rules of TensorRT 10.x / 11's ONNX parser and builder, and, when a DLA build is asked for (``dla_batch``), the
DLA restrictions. Every rule has an id and the document it comes from in ``RULES``; a violation names the rule,
the node (or tensor) and what is wrong. The bundle turns violations into a failed variant (``bundle_conformance``).

What this cannot see: anything TensorRT decides at build time (tactics, fusions actually taken, which layers a
DLA build really places on the DLA, memory). A graph that passes here can still fail to build on a device; one
that fails here does not build (or, for the DLA rules, does not run its trunk on the DLA).

Sources (read for this module; cited per rule in ``RULES``):

- onnx-tensorrt ``docs/operators.md`` of the 10.1 GA parser: the operator support matrix with supported types and
  restrictions, "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20", "UINT8 is
  only supported as network input or output tensor types".
- onnx-tensorrt ``onnxOpImporters.cpp`` (10.1 GA) ``QuantDequantLinearHelper``: UINT8 refused as Q/DQ input and as
  QuantizeLinear zero-point, "Scale coefficients must all be positive" (FP32/FP16/BF16 scales only), scale not
  dynamic, "TensorRT only supports symmetric quantization. The zero point ... must be all zeros", per-channel
  scale count equal to the axis dimension.
- NVIDIA/TensorRT ``include/NvInfer.h`` (release/10.7, the last 10.x with DLA): ``IQuantizeLayer`` /
  ``IDequantizeLayer`` (DequantizeLinear input INT8/FP8/INT4, zero-points zero, scales positive, scalar or 1-D,
  per-channel only for weights, build-time constants), ``INetworkDefinition::addInput`` ("If run on DLA with
  explicit dimensions, only leading dimension can be a wildcard. And provided profile must have same minimum,
  optimum, and maximum dimensions"), the DLA limits of ``IConvolutionLayer`` / ``IPoolingLayer`` /
  ``IActivationLayer`` / ``IElementWiseLayer``.
- TensorRT "DLA Supported Layers and Restrictions" (general restrictions: batch <= 4096, non-batch dims <= 8192,
  min = opt = max) and "Building and Launching the Loadable" ("DLA support is currently limited to networks
  running in FP16 and INT8 mode"); NVIDIA/Deep-Learning-Accelerator-SW ``operators/README.md`` (which ONNX
  operators run natively on Orin DLA through TensorRT: QuantizeLinear / DequantizeLinear are "Reconstruction",
  "Can be collapsed to INT8 scaling factor, switching from explicit to implicit quantization", not "Native").
- DLA INT8 per TensorRT major (``dla_target``): TensorRT 10 takes INT8 on the DLA from implicit quantization, a
  Q/DQ-free graph plus a calibration cache (NVIDIA/Deep-Learning-Accelerator-SW tools/qdq-translator: Q/DQ graph ->
  Q/DQ-free graph + cache, a tensor without a scale sends its layers to FP16); TensorRT >= 11.4.1 builds DLA
  networks strongly typed ("Strongly Typed Networks for DLA", TensorRT 11.4.1), INT8 from Q/DQ, placed on every
  DLA tensor as NVIDIA Model-Optimizer's ``target_dla`` does (modelopt/onnx/quantization: int8.py, ort_utils.py,
  quantize.py "Q/DQ nodes to be placed in all tensors for optimal DLA deployment"). ``export.dla_int8`` makes
  both graphs; neither is verified on an Orin.
- TensorRT ONNX Opset Guide (11.x: opsets 9 to 25), so [9, 20] holds for both 10.x and 11.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from edge_encoder.export.onnx_export import INPUT_PREFIX, PREPROCESS_PREFIX, TAIL_PREFIX
from edge_encoder.device.trt_plans import DLA_VARIANTS, TENSORRT_VARIANTS
from onnx import TensorProto, numpy_helper

SRC_OPERATORS = "https://github.com/onnx/onnx-tensorrt/blob/10.1-GA/docs/operators.md"
SRC_PARSER = "https://github.com/onnx/onnx-tensorrt/blob/10.1-GA/onnxOpImporters.cpp (QuantDequantLinearHelper)"
SRC_NVINFER = "https://github.com/NVIDIA/TensorRT/blob/release/10.7/include/NvInfer.h"
SRC_OPSET_GUIDE = "https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html"
SRC_DLA = "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html"
SRC_DLA_PRECISION = "https://docs.nvidia.com/deeplearning/tensorrt/11.3.0/inference-library/dla-build-and-run.html"
SRC_DLA_OPS = ("https://github.com/NVIDIA/Deep-Learning-Accelerator-SW/blob/main/operators/README.md "
               "(Operator/Function Support Matrix: 'Orin DLA support through TensorRT')")
SRC_QDQ_TRANSLATOR = ("https://github.com/NVIDIA/Deep-Learning-Accelerator-SW/tree/main/tools/qdq-translator "
                      "(qdq_translator.py: tensors without a scale -> fp16_nodes; README: trtexec --int8 --fp16 "
                      "--calib --useDLACore)")
SRC_DLA_STRONG = "https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/dla-strongly-typed-networks.html"
SRC_MODELOPT_DLA = ("https://github.com/NVIDIA/Model-Optimizer/blob/main/modelopt/onnx/quantization/int8.py "
                    "(target_dla: every op type quantized), ort_utils.py (configure_ort: no output "
                    "quantization, shared Q/DQ pairs, per-channel Conv weights), quantize.py (target_dla docstring)")
SRC_CONTRACT = "docs/CONTRACTS.md (engine output float32 (N, D)); Triton config TYPE_FP32 (export/bundle.py)"

CHECKED = "TensorRT 10.x/11 ONNX parser rules (export/trt_conformance.py)"


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` id (a key of ``RULES``), the ``node`` (or tensor) name, what is wrong, the source."""

    rule: str
    node: str
    detail: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    summary: str
    source: str


RULES: dict[str, Rule] = {
    "opset": Rule("default-domain opset within [9, 20] (TensorRT 10.0 parser; 11.x accepts 9 to 25)",
                  f"{SRC_OPERATORS}; {SRC_OPSET_GUIDE}"),
    "operator": Rule("operator in the ONNX-TensorRT support matrix (default domain, marked Y)", SRC_OPERATORS),
    "operator_types": Rule("the operator's data input has a type the support matrix lists for it", SRC_OPERATORS),
    "operator_restriction": Rule("per-operator restrictions of the support matrix: Reduce*/Squeeze/Slice/CumSum "
                                 "`axes` an initializer, Unsqueeze `axes` constant, pooling 2D/3D with unit "
                                 "dilations and no `Indices` output, Constant without sparse/string values",
                                 SRC_OPERATORS),
    "qdq_input_type": Rule("DequantizeLinear input INT8/FP8/INT4 (never INT32 or UINT8); QuantizeLinear input "
                           "FP32/FP16/BF16", f"{SRC_OPERATORS}; {SRC_NVINFER} (IDequantizeLayer); {SRC_PARSER}"),
    "qdq_zero_point": Rule("Q/DQ zero-point a constant of zeros, INT8/FP8/INT4 (not UINT8), the size of the scale",
                           f"{SRC_OPERATORS}; {SRC_PARSER}; {SRC_NVINFER} (IQuantizeLayer)"),
    "qdq_scale": Rule("Q/DQ scale a build-time constant, FP32/FP16/BF16, every coefficient positive and finite, "
                      "scalar or 1-D", f"{SRC_PARSER}; {SRC_NVINFER} (IQuantizeLayer)"),
    "qdq_axis": Rule("per-channel (1-D) scales only on weights (an initializer), as many as the axis dimension; "
                     "activations per-tensor", f"{SRC_NVINFER} (IQuantizeLayer, IDequantizeLayer); {SRC_PARSER}"),
    "cast_type": Rule("Cast input and target among FP32, FP16, BF16, INT32, INT64, UINT8, BOOL", SRC_OPERATORS),
    "uint8_io": Rule("UINT8 tensors only as network inputs or outputs (read only by a Cast)", SRC_OPERATORS),
    "dynamic_dims": Rule("only the leading (batch) dimension of the I/O may be dynamic, and the profile must fit "
                         "it: 1 <= min <= opt <= max, min = opt = max = the dimension when it is static",
                         f"{SRC_NVINFER} (INetworkDefinition::addInput, IOptimizationProfile)"),
    "output_dtype": Rule("the network output `embeddings` is float32", SRC_CONTRACT),
    "dla_static_shape": Rule("DLA: no dynamic dimensions: profile min = opt = max = the DLA batch",
                             f"{SRC_DLA} (General Restrictions); {SRC_NVINFER} (addInput)"),
    "dla_limits": Rule("DLA: batch size <= 4096, every non-batch dimension <= 8192", f"{SRC_DLA} (General Restrictions)"),
    "dla_precision": Rule("DLA: FP16 or INT8 only (an FP32 graph cannot run on the DLA); a convolution is INT8 when "
                          "its inputs are dequantized (explicit) or its input and output have calibration scales "
                          "(implicit)", f"{SRC_DLA_PRECISION}; {SRC_QDQ_TRANSLATOR}"),
    "dla_layer": Rule("DLA: every layer of the convolutional trunk 'Native' on Orin DLA through TensorRT; "
                      "QuantizeLinear/DequantizeLinear are 'Reconstruction' (collapsed into INT8 scales): refused in "
                      "a TensorRT 10 DLA graph (implicit quantization), folded into the INT8 layers by TensorRT "
                      ">= 11.4.1 (strongly typed)", f"{SRC_DLA_OPS}; {SRC_DLA}; {SRC_DLA_STRONG}"),
    "dla_calibration": Rule("TensorRT 10 DLA INT8 (implicit quantization): every tensor of the trunk has a scale in "
                            "the calibration cache (a tensor without one sends its layers to FP16)",
                            SRC_QDQ_TRANSLATOR),
    "dla_qdq_placement": Rule("TensorRT >= 11.4.1 DLA INT8 (strongly typed): every activation the trunk reads (and "
                              "the trunk's output into the head) through a Q/DQ pair, every convolution weight "
                              "through a per-channel DequantizeLinear: Model-Optimizer's target_dla placement",
                              f"{SRC_MODELOPT_DLA}; {SRC_DLA_STRONG}"),
    "dla_conv": Rule("DLA convolution: 2D, kernel [1, 32], stride [1, 8], padding [0, 31] and below the kernel, "
                     "dilation [1, 32], output maps [1, 8192], groups <= 8192", f"{SRC_NVINFER} (IConvolutionLayer)"),
    "dla_pool": Rule("DLA pooling: max or average, 2D, window [1, 8], stride [1, 16], padding [0, 7]",
                     f"{SRC_NVINFER} (IPoolingLayer)"),
}

# onnx-tensorrt docs/operators.md (10.1 GA): operators marked Y, with their "Supported Types" column.
_FP = ("FLOAT", "FLOAT16", "BFLOAT16")
_FP_INT = _FP + ("INT32", "INT64")
_FP_INT_BOOL = _FP_INT + ("BOOL",)
SUPPORTED_TYPES: dict[str, tuple[str, ...]] = {
    **{op: _FP for op in (
        "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu",
        "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "GRU", "HardSigmoid",
        "HardSwish", "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf", "LayerNormalization", "LeakyRelu",
        "Log", "LogSoftmax", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "MaxPool",
        "MeanVarianceNormalization", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
        "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Reciprocal", "Resize", "RNN", "Round",
        "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan",
        "Tanh", "ThresholdedRelu", "Upsample")},
    **{op: ("FLOAT", "FLOAT16") for op in ("DeformConv", "GridSample", "Mish", "NonMaxSuppression", "NonZero",
                                          "RoiAlign")},
    **{op: _FP_INT for op in (
        "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN",
        "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Pad", "Range", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Scatter", "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth",
        "Sub", "Sum", "TopK")},
    **{op: _FP_INT_BOOL for op in (
        "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements",
        "GatherND", "Identity", "If", "Loop", "OneHot", "Reshape", "ReverseSequence", "Shape", "Size", "Slice",
        "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where")},
    **{op: ("BOOL",) for op in ("And", "Not", "Or", "Xor")},
    "Cast": _FP_INT + ("UINT8", "BOOL"), "CastLike": _FP_INT + ("UINT8", "BOOL"),
    "DequantizeLinear": ("INT8", "FLOAT8E4M3FN", "INT4"),
    "Gelu": _FP + ("INT8", "INT32", "INT64"), "Mean": _FP + ("FLOAT8E4M3FN", "INT32", "INT64"),
}
MIN_OPSET, MAX_OPSET = 9, 20
_AXES_INPUT = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Slice", "CumSum", "Unsqueeze"}
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_QDQ_ZERO_POINT_TYPES = ("INT8", "FLOAT8E4M3FN", "INT4")

# Orin DLA through TensorRT, "Native" in Deep-Learning-Accelerator-SW operators/README.md. GlobalAveragePool,
# ReduceMean, Div, Sqrt, Min, Flatten, Cast: not native (see the table: "None" / "See RFE"; they fall back to the GPU).
DLA_NATIVE = {"Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv",
              "ConvTranspose", "Cos", "Equal", "Gemm", "LeakyRelu", "LRN", "MatMul", "Max", "MaxPool", "Mul",
              "PRelu", "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Softmax", "Split", "Sub", "Sum", "Tanh",
              "Transpose", "Upsample"}
# Same table: QuantizeLinear and DequantizeLinear are "Reconstruction" through TensorRT: "Can be collapsed to INT8
# scaling factor, switching from explicit to implicit quantization". TensorRT 10 DLA builds take the INT8 scales from
# a calibration cache instead (qdq-translator); TensorRT >= 11.4.1 builds DLA strongly typed and folds the Q/DQ into
# the INT8 layers itself (dla_target "tensorrt11").
DLA_RECONSTRUCTED = {"QuantizeLinear", "DequantizeLinear"}
DLA_TARGETS = ("tensorrt10", "tensorrt11")  # implicit INT8 (weakly typed + calibration cache) / strongly typed Q/DQ
# Where the convolutional trunk ends: global pooling and all after it (pooled features, the L2 tail) are
# expected to run on the GPU by GPU fallback; the DLA layer rules cover the trunk before it.
_HEAD_OPS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}
DLA_MAX_BATCH, DLA_MAX_DIM = 4096, 8192  # DLA Supported Layers and Restrictions, General Restrictions


def _violation(rule: str, node: str, detail: str) -> Violation:
    return Violation(rule, node, detail, RULES[rule].source)


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


class _Graph:
    """Lookups over one model: initializers, Constant outputs, producers, consumers and inferred element types."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - a graph that does not infer is checked on what it declares
            inferred = model
        g = inferred.graph
        self.model, self.graph = inferred, g
        self.inits = {t.name: t for t in g.initializer}
        self.constants = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
        self.producer = {out: n for n in g.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.types: dict[str, int] = {t.name: t.data_type for t in g.initializer}
        self.shapes: dict[str, tuple[int | str | None, ...]] = {t.name: tuple(t.dims) for t in g.initializer}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                             for d in tt.shape.dim)
        for name, node in self.constants.items():
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                self.types.setdefault(name, value.data_type)
        self.io = {vi.name for vi in list(g.input) + list(g.output)}

    def constant_array(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output (a build-time constant), else ``None``."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.constants.get(name)
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node is not None else None
        return None if value is None else numpy_helper.to_array(value)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check_opset(model: onnx.ModelProto) -> list[Violation]:
    opset = _opset(model)
    if MIN_OPSET <= opset <= MAX_OPSET:
        return []
    return [_violation("opset", "<model>", f"opset {opset} is outside [{MIN_OPSET}, {MAX_OPSET}], the range the "
                                           "TensorRT 10.0 ONNX parser documents")]


def _check_operators(gr: _Graph) -> list[Violation]:
    out = []
    for node in gr.graph.node:
        if node.domain not in ("", "ai.onnx"):
            out.append(_violation("operator", node.name, f"{node.domain}::{node.op_type} is not an ONNX "
                                                         "default-domain operator (needs a TensorRT plugin)"))
        elif node.op_type not in SUPPORTED_TYPES:
            out.append(_violation("operator", node.name, f"{node.op_type} is not supported by the TensorRT ONNX parser"))
        elif node.input and node.input[0] in gr.types and node.op_type not in _QDQ:  # Q/DQ: see _check_qdq
            dtype = _type_name(gr.types[node.input[0]])
            if dtype not in SUPPORTED_TYPES[node.op_type]:
                out.append(_violation("operator_types", node.name, f"{node.op_type} input {node.input[0]!r} is "
                                      f"{dtype}; supported: {', '.join(SUPPORTED_TYPES[node.op_type])}"))
    return out


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _check_restrictions(gr: _Graph) -> list[Violation]:
    out = []
    for node in gr.graph.node:
        op = node.op_type
        if op in _AXES_INPUT:
            axes_index = 3 if op == "Slice" else 1
            if len(node.input) > axes_index and node.input[axes_index] and gr.constant_array(node.input[axes_index]) is None:
                out.append(_violation("operator_restriction", node.name,
                                      f"{op} `axes` input {node.input[axes_index]!r} is not an initializer/constant"))
        if op in ("MaxPool", "AveragePool", "LpPool"):
            kernel = _attr(node, "kernel_shape", [])
            if len(kernel) not in (2, 3):
                out.append(_violation("operator_restriction", node.name, f"{op} is {len(kernel)}D; 2D or 3D only"))
            if any(d != 1 for d in _attr(node, "dilations", []) or []):
                out.append(_violation("operator_restriction", node.name, f"{op} dilations must be empty or all ones"))
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                out.append(_violation("operator_restriction", node.name, "MaxPool `Indices` output is unsupported"))
        if op == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute):
            out.append(_violation("operator_restriction", node.name,
                                  "Constant with sparse_value/value_string(s) is unsupported"))
    return out


def _check_qdq(gr: _Graph) -> list[Violation]:
    out = []
    for node in gr.graph.node:
        if node.op_type not in _QDQ:
            continue
        x = node.input[0]
        dtype = _type_name(gr.types[x]) if x in gr.types else None
        if node.op_type == "DequantizeLinear" and dtype is not None and dtype not in SUPPORTED_TYPES["DequantizeLinear"]:
            out.append(_violation("qdq_input_type", node.name, f"DequantizeLinear input {x!r} is {dtype}; TensorRT "
                                  "dequantizes only INT8/FP8/INT4 (an INT32 bias DequantizeLinear is refused: "
                                  "'only activation types allowed as input to this layer')"))
        if node.op_type == "QuantizeLinear" and dtype is not None and dtype not in _FP:
            out.append(_violation("qdq_input_type", node.name, f"QuantizeLinear input {x!r} is {dtype}; "
                                  "FP32/FP16/BF16 only"))
        scale = _check_scale(gr, node, out)
        _check_zero_point(gr, node, scale, out)
        if scale is not None and scale.size > 1:
            _check_axis(gr, node, scale, out)
    return out


def _check_scale(gr: _Graph, node: onnx.NodeProto, out: list[Violation]) -> np.ndarray | None:
    name = node.input[1] if len(node.input) > 1 else ""
    scale = gr.constant_array(name) if name else None
    if scale is None:
        out.append(_violation("qdq_scale", node.name, f"scale {name!r} is not a build-time constant"))
        return None
    dtype = _type_name(gr.types.get(name, 0)) if name in gr.types else str(scale.dtype)
    if dtype not in _FP:
        out.append(_violation("qdq_scale", node.name, f"scale {name!r} is {dtype}; FP32/FP16/BF16 only"))
    if scale.ndim > 1:
        out.append(_violation("qdq_scale", node.name, f"scale {name!r} has rank {scale.ndim}; scalar or 1-D only"))
    values = scale.astype(np.float64)
    if not np.all(np.isfinite(values)) or not np.all(values > 0):
        bad = values[~(np.isfinite(values) & (values > 0))]
        out.append(_violation("qdq_scale", node.name, f"scale {name!r} has {bad.size} coefficient(s) that are "
                              f"not positive and finite (e.g. {bad.ravel()[0]!r})"))
    return scale


def _check_zero_point(gr: _Graph, node: onnx.NodeProto, scale: np.ndarray | None, out: list[Violation]) -> None:
    if len(node.input) < 3 or not node.input[2]:
        return  # absent: zero (and INT8 for TensorRT)
    name = node.input[2]
    zp = gr.constant_array(name)
    if zp is None:
        out.append(_violation("qdq_zero_point", node.name, f"zero-point {name!r} is not a build-time constant"))
        return
    dtype = _type_name(gr.types[name]) if name in gr.types else str(zp.dtype)
    if dtype not in _QDQ_ZERO_POINT_TYPES:
        out.append(_violation("qdq_zero_point", node.name, f"zero-point {name!r} is {dtype}; TensorRT quantizes "
                              "to INT8/FP8/INT4 only (UINT8/INT32 are refused)"))
    if np.any(zp.astype(np.float64) != 0):
        out.append(_violation("qdq_zero_point", node.name, f"zero-point {name!r} is not all zeros (max |zp| = "
                              f"{float(np.abs(zp.astype(np.float64)).max()):g}); TensorRT quantization is symmetric"))
    if scale is not None and zp.size != scale.size:
        out.append(_violation("qdq_zero_point", node.name, f"zero-point {name!r} has {zp.size} values, the scale "
                              f"{scale.size}"))


def _check_axis(gr: _Graph, node: onnx.NodeProto, scale: np.ndarray, out: list[Violation]) -> None:
    x = node.input[0]
    if gr.constant_array(x) is None:
        out.append(_violation("qdq_axis", node.name, f"per-channel scale ({scale.size} values) on activation "
                              f"{x!r}; activations are quantized per-tensor only"))
        return
    shape = gr.shapes.get(x, ())
    axis = int(_attr(node, "axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape) or shape[axis] != scale.size:
        out.append(_violation("qdq_axis", node.name, f"{scale.size} scales for axis {axis} of {x!r} with shape "
                              f"{list(shape)}"))


def _check_casts_and_uint8(gr: _Graph) -> list[Violation]:
    out = []
    allowed = SUPPORTED_TYPES["Cast"]
    for node in gr.graph.node:
        if node.op_type == "Cast":
            target = _type_name(int(_attr(node, "to", 0)))
            if target not in allowed:
                out.append(_violation("cast_type", node.name, f"Cast to {target}; supported: {', '.join(allowed)}"))
        for name in list(node.input) + list(node.output):
            if name and gr.types.get(name) == TensorProto.UINT8 and name not in gr.io and name not in gr.inits:
                out.append(_violation("uint8_io", node.name, f"tensor {name!r} is UINT8 inside the network"))
            elif name in gr.io and gr.types.get(name) == TensorProto.UINT8 and name in node.input and node.op_type != "Cast":
                out.append(_violation("uint8_io", node.name, f"UINT8 network input {name!r} is read by {node.op_type}, "
                                      "not by a Cast"))
    return out


def _check_profile(profile: dict[str, int]) -> tuple[int, int, int]:
    if not isinstance(profile, dict) or set(profile) < {"min", "opt", "max"}:
        raise ValueError(f"profile must be a dict with min/opt/max, got {profile!r}")
    values = tuple(profile[k] for k in ("min", "opt", "max"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"profile min/opt/max must be ints, got {profile!r}")
    return values  # type: ignore[return-value]


def _check_dims(gr: _Graph, profile: dict[str, int]) -> list[Violation]:
    lo, opt, hi = _check_profile(profile)
    out = []
    g = gr.graph
    for vi in [i for i in g.input if i.name not in gr.inits] + list(g.output):  # (IR < 4 lists weights as inputs)
        dims = gr.shapes.get(vi.name)
        if not dims:
            out.append(_violation("dynamic_dims", vi.name, "has no static rank"))
            continue
        for axis, d in enumerate(dims[1:], start=1):
            if not isinstance(d, int) or d <= 0:
                out.append(_violation("dynamic_dims", vi.name, f"dimension {axis} is {d!r}; only the batch "
                                      "dimension may be dynamic"))
        batch = dims[0]
        if not 1 <= lo <= opt <= hi:
            out.append(_violation("dynamic_dims", vi.name, f"profile min/opt/max {lo}/{opt}/{hi} must satisfy "
                                  "1 <= min <= opt <= max"))
        elif isinstance(batch, int) and batch > 0 and not lo == opt == hi == batch:
            out.append(_violation("dynamic_dims", vi.name, f"batch dimension is static ({batch}) but the profile "
                                  f"asks for {lo}/{opt}/{hi}"))
        elif batch is None:
            out.append(_violation("dynamic_dims", vi.name, "batch dimension is unnamed/unknown"))
    return out


def _check_output(gr: _Graph) -> list[Violation]:
    return [_violation("output_dtype", o.name, f"output is {_type_name(gr.types.get(o.name, 0))}, not FLOAT")
            for o in gr.graph.output if gr.types.get(o.name) != TensorProto.FLOAT]


def _trunk(gr: _Graph) -> list[onnx.NodeProto]:
    """Body nodes before the global pooling head (see ``_HEAD_OPS``), in graph order."""
    head: set[str] = set()
    for node in gr.graph.node:
        from_head = any(gr.producer.get(i) is not None and gr.producer[i].name in head for i in node.input)
        if node.op_type in _HEAD_OPS or from_head:
            head.add(node.name)
    return [n for n in gr.graph.node if n.name not in head
            and not n.name.startswith((PREPROCESS_PREFIX, TAIL_PREFIX, INPUT_PREFIX))]


def _ints(node: onnx.NodeProto, name: str, n: int, default: int) -> list[int]:
    value = _attr(node, name)
    return list(value) if value else [default] * n


def _check_dla_conv(gr: _Graph, node: onnx.NodeProto) -> list[Violation]:
    weight = gr.shapes.get(node.input[1], ())
    kernel = list(_attr(node, "kernel_shape") or weight[2:])
    problems = []
    if len(kernel) != 2:
        problems.append(f"{len(kernel)}D (2D only)")
    pads = _ints(node, "pads", 2 * len(kernel), 0)
    for what, values, lo, hi in (("kernel", kernel, 1, 32), ("stride", _ints(node, "strides", len(kernel), 1), 1, 8),
                                 ("padding", pads, 0, 31), ("dilation", _ints(node, "dilations", len(kernel), 1), 1, 32)):
        if any(not isinstance(v, int) or not lo <= v <= hi for v in values):
            problems.append(f"{what} {values} outside [{lo}, {hi}]")
    if kernel and any(p >= kernel[i % len(kernel)] for i, p in enumerate(pads) if isinstance(kernel[i % len(kernel)], int)):
        problems.append(f"padding {pads} not below the kernel {kernel}")
    maps, groups = (weight[0] if weight else None), int(_attr(node, "group", 1))
    if isinstance(maps, int) and not 1 <= maps <= 8192:
        problems.append(f"{maps} output maps outside [1, 8192]")
    if groups > 8192:
        problems.append(f"{groups} groups > 8192")
    return [_violation("dla_conv", node.name, "; ".join(problems))] if problems else []


def _check_dla_pool(node: onnx.NodeProto) -> list[Violation]:
    kernel = list(_attr(node, "kernel_shape", []))
    problems = [] if len(kernel) == 2 else [f"{len(kernel)}D (2D only)"]
    for what, values, lo, hi in (("window", kernel, 1, 8), ("stride", _ints(node, "strides", len(kernel), 1), 1, 16),
                                 ("padding", _ints(node, "pads", 2 * len(kernel), 0), 0, 7)):
        if any(not lo <= v <= hi for v in values):
            problems.append(f"{what} {values} outside [{lo}, {hi}]")
    return [_violation("dla_pool", node.name, "; ".join(problems))] if problems else []


def dla_trunk(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of ``model`` a DLA build is meant to run: the body before the global pooling head (``_HEAD_OPS``),
    preprocessing, input adapters and the tail excluded, in graph order (Q/DQ nodes included when the graph has
    them). Shared with ``export.dla_int8``, which quantizes exactly these."""
    return _trunk(_Graph(model))


def _conv_precision(gr: _Graph, node: onnx.NodeProto, scales: set[str] | frozenset[str] | None = None) -> str:
    """``"int8"`` (data and weight dequantized, or, implicitly, input and output both with a calibration scale in
    ``scales``), ``"fp16"`` or the compute type's name."""
    src = [gr.producer.get(name) for name in node.input[:2]]
    if all(p is not None and p.op_type == "DequantizeLinear" for p in src):
        return "int8"
    if scales is not None and node.input[0] in scales and node.output[0] in scales:
        return "int8"
    dtype = gr.types.get(node.input[1]) or gr.types.get(node.input[0])
    return "fp16" if dtype == TensorProto.FLOAT16 else _type_name(dtype or 0).lower()


def _trunk_tensors(gr: _Graph, trunk: list[onnx.NodeProto]) -> list[str]:
    """Activation tensors read or written by the trunk's layers (Q/DQ nodes and constants left out)."""
    return list(dict.fromkeys(t for n in trunk if n.op_type not in DLA_RECONSTRUCTED
                              for t in list(n.input) + list(n.output)
                              if t and t not in gr.inits and t not in gr.constants))


def _check_dla_calibration(gr: _Graph, trunk: list[onnx.NodeProto], scales: set[str] | frozenset[str]) -> list[Violation]:
    missing = [t for t in _trunk_tensors(gr, trunk) if t not in scales]
    if not missing:
        return []
    return [_violation("dla_calibration", missing[0], f"{len(missing)} trunk tensor(s) have no scale in the calibration "
                       f"cache (e.g. {', '.join(repr(t) for t in missing[:3])}); their layers would run FP16, not INT8")]


def _check_dla_qdq_placement(gr: _Graph, trunk: list[onnx.NodeProto]) -> list[Violation]:
    """Model-Optimizer ``target_dla``: every activation input of a trunk layer and every trunk tensor the head reads
    comes out of a DequantizeLinear; every convolution weight too. Only for a graph with Q/DQ in its trunk (an INT8
    graph): an FP16 graph has none and needs none."""
    layers = [n for n in trunk if n.op_type not in DLA_RECONSTRUCTED]
    if len(layers) == len(trunk):
        return []
    names = {n.name for n in trunk}
    trunk_out = {o for n in trunk for o in n.output}
    head_reads = [(n, i) for n in gr.graph.node if n.name not in names and not n.name.startswith(TAIL_PREFIX)
                  for i, t in enumerate(n.input) if t in trunk_out]
    bare = []
    for node, index in [(n, i) for n in layers for i in range(len(n.input))] + head_reads:
        name = node.input[index]
        if not name or name in gr.constants or (name in gr.inits and not (node.op_type == "Conv" and index == 1)):
            continue  # biases and other constants stay float (Model-Optimizer: QuantizeBias False)
        src = gr.producer.get(name)
        if src is None or src.op_type != "DequantizeLinear":
            bare.append((node.name, name))
    if not bare:
        return []
    return [_violation("dla_qdq_placement", bare[0][0], f"{len(bare)} input(s) of trunk layers read no "
                       f"DequantizeLinear (e.g. {bare[0][1]!r} into {bare[0][0]}): a strongly typed DLA build runs "
                       "them in float, i.e. not on the DLA or not in INT8")]


def _check_dla(gr: _Graph, profile: dict[str, int], dla_batch: int, target: str = "tensorrt10",
               scales: set[str] | frozenset[str] | None = None) -> list[Violation]:
    if target not in DLA_TARGETS:
        raise ValueError(f"dla_target must be one of {DLA_TARGETS}, got {target!r}")
    lo, opt, hi = _check_profile(profile)
    out = []
    if not lo == opt == hi == dla_batch:
        out.append(_violation("dla_static_shape", gr.graph.input[0].name, f"profile min/opt/max {lo}/{opt}/{hi}; "
                              f"DLA needs min = opt = max = {dla_batch}"))
    if not 1 <= dla_batch <= DLA_MAX_BATCH:
        out.append(_violation("dla_limits", gr.graph.input[0].name, f"DLA batch {dla_batch} outside [1, {DLA_MAX_BATCH}]"))
    trunk = _trunk(gr)
    on_dla = [gr.graph.input[0].name] + [t for n in trunk for t in list(n.input) + list(n.output)]
    for name in dict.fromkeys(t for t in on_dla if t and t not in gr.inits):
        big = [d for d in gr.shapes.get(name, ())[1:] if isinstance(d, int) and d > DLA_MAX_DIM]
        if big:
            out.append(_violation("dla_limits", name, f"non-batch dimension {big[0]} > {DLA_MAX_DIM}"))
    convs = [n for n in trunk if n.op_type == "Conv"]
    wide = [(n, p) for n in convs if (p := _conv_precision(gr, n, scales)) not in ("int8", "fp16")]
    if wide:  # one line for the graph: it is the variant's precision that is wrong, not a layer
        out.append(_violation("dla_precision", wide[0][0].name, f"{len(wide)} of {len(convs)} convolutions compute "
                              f"in {wide[0][1]}; DLA runs FP16 or INT8 only (use the fp16 or int8_trt variant)"))
    if scales is not None:
        out += _check_dla_calibration(gr, trunk, scales)
    if target == "tensorrt11":
        out += _check_dla_qdq_placement(gr, trunk)
    for node in trunk:
        if node.op_type in DLA_RECONSTRUCTED:
            if target == "tensorrt10":
                out.append(_violation("dla_layer", node.name, f"{node.op_type} is 'Reconstruction', not native, on "
                                      "Orin DLA through TensorRT: a TensorRT 10 DLA build takes INT8 from a "
                                      "Q/DQ-free graph and a calibration cache (export.dla_int8)"))
        elif node.op_type not in DLA_NATIVE:
            out.append(_violation("dla_layer", node.name, f"{node.op_type} has no native DLA support through "
                                                          "TensorRT (it would fall back to the GPU)"))
        elif node.op_type == "Conv":
            out += _check_dla_conv(gr, node)
        elif node.op_type in ("MaxPool", "AveragePool"):
            out += _check_dla_pool(node)
    return out


def check_tensorrt_graph(model: onnx.ModelProto, *, profile: dict[str, int], dla_batch: int | None = None,
                         dla_target: str = "tensorrt10", dla_scales: Any = None) -> list[Violation]:
    """Every documented TensorRT 10.x/11 rule ``model`` breaks (empty list: conformant), in rule order.

    Args:
        model: an encoder graph (``images`` -> ``embeddings``).
        profile: the TensorRT batch profile ``{"min": int, "opt": int, "max": int}`` the bundle builds with.
        dla_batch: the static DLA batch when a DLA build is asked for (adds the ``dla_*`` rules, which expect
            ``profile`` to be that DLA build's profile), else ``None`` (0 means the same: ``export.dla_batch = 0``).
        dla_target: which DLA build the ``dla_*`` rules check for: ``"tensorrt10"`` (weakly typed, INT8 from a
            calibration cache: Q/DQ are refused, 'Reconstruction' in NVIDIA's table) or ``"tensorrt11"``
            (TensorRT >= 11.4.1, strongly typed: INT8 from Q/DQ on every DLA tensor, ``dla_qdq_placement``).
        dla_scales: tensor names that have a scale in the calibration cache the TensorRT 10 build reads (adds
            ``dla_calibration``; with them a float convolution counts as INT8), or ``None``.

    Raises:
        ValueError / TypeError: ``profile`` lacks min/opt/max or holds non-ints; an unknown ``dla_target``.
    """
    gr = _Graph(model)
    out = _check_opset(model) + _check_operators(gr) + _check_restrictions(gr) + _check_qdq(gr)
    out += _check_casts_and_uint8(gr) + _check_dims(gr, profile) + _check_output(gr)
    if dla_batch:
        out += _check_dla(gr, profile, dla_batch, dla_target, None if dla_scales is None else frozenset(dla_scales))
    return list(dict.fromkeys(out))  # one entry per (rule, node, detail)


def bundle_conformance(model: onnx.ModelProto, variant: str, *, profile: dict[str, int],
                       dla_batch: int | None = None,
                       dla_graphs: dict[str, tuple[str, onnx.ModelProto, Any]] | None = None,
                       ) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest fragment and parity-style failures of one bundle variant.

    ``profile`` is the bundle's GPU profile (dynamic batch). With ``dla_batch`` > 0 (``export.dla_batch``) the
    variants that get a DLA plan (``device.trt_plans.DLA_VARIANTS``: fp16, int8_trt) are also checked against the
    DLA rules under that plan's static profile (min = opt = max = ``dla_batch``), for both DLA builds
    (``DLA_TARGETS``); fp32 gets no DLA plan. The DLA plans of int8_trt are built from its DLA graphs
    (``export.dla_int8``), so with ``dla_graphs`` = ``{"tensorrt10": (file, graph, cache tensor names),
    "tensorrt11": (file, graph, None)}`` those are checked instead of ``model`` (a violation's detail and failure
    name the file). Without them the Q/DQ graph itself is checked, and fails the TensorRT 10 rules.

    Returns ``(None, [])`` for variants that are not TensorRT-bound (``int8_cpu``); otherwise
    ``({"passed", "checked", "violations": [Violation.to_dict()...]}, ["tensorrt:<rule> at <node>", ...])``.
    """
    if variant not in TENSORRT_VARIANTS:
        return None, []
    violations = check_tensorrt_graph(model, profile=profile)
    failures = [f"tensorrt:{v.rule} at {v.node}" for v in violations]
    dla = bool(dla_batch) and variant in DLA_VARIANTS
    checked: dict[str, str] = {}
    if dla:
        static = {"min": dla_batch, "opt": dla_batch, "max": dla_batch}
        graphs = dla_graphs if variant == "int8_trt" and dla_graphs else {t: (None, model, None) for t in DLA_TARGETS}
        for target in DLA_TARGETS:
            file, graph, scales = graphs[target]
            found = [v for v in check_tensorrt_graph(graph, profile=static, dla_batch=dla_batch, dla_target=target,
                                                     dla_scales=scales) if v.rule.startswith("dla_")]
            if file:  # one of the DLA graphs: say which file broke the rule
                checked[target] = file
                found = [Violation(v.rule, v.node, f"[{file}, {target}] {v.detail}", v.source) for v in found]
            new = [v for v in found if (v.rule, v.node, v.detail) not in {(w.rule, w.node, w.detail) for w in violations}]
            violations += new
            failures += [f"tensorrt:{v.rule} at {v.node}" + (f" ({file})" if file else "") for v in new]
    entry = {"passed": not violations, "checked": CHECKED, **({"dla_batch": dla_batch} if dla else {}),
             **({"dla_graphs": checked} if checked else {}), "violations": [v.to_dict() for v in violations]}
    return entry, list(dict.fromkeys(failures))
