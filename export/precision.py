"""Precision variants derived from the verified FP32 encoder graph (no PyTorch needed).

- ``fp16``: the backbone region's weights and compute in FP16; preprocessing and the L2 tail stay FP32,
  joined by explicit Casts (the tail's sum of squares overflows in FP16).
- ``int8_trt``: static PTQ in QDQ format for TensorRT's explicit quantization: int8 per-channel weights and
  int8 activations, all symmetric (every zero-point 0, TensorRT rejects anything else), biases left in FP32
  (no INT32 ``DequantizeLinear``: TensorRT's parser refuses them), and Q/DQ only where NVIDIA's placement
  recommendations put them (see ``_TRT_PLACEMENT``): convolution inputs and weights, and the residual branch
  of each ``Add`` so that Conv + Add fuse. Pooling, flatten and the L2 tail carry no Q/DQ and stay FP32.
- ``int8_cpu``: static PTQ in QDQ format, uint8 (asymmetric) activations and int8 per-channel weights
  (U8S8), which ONNX Runtime's CPU kernels run fast on x86 VNNI and ARM.

INT8 variants quantize only the backbone region: the preprocessing and the tail are passed to the
quantizer as ``nodes_to_exclude`` (they are found by their ``preprocess/`` and ``tail/`` name prefixes).

Both input layouts are handled: for a ``float_nchw`` encoder (no preprocessing nodes) the FP16 cast sits
right after the graph input (``input/cast_fp16``), and INT8 calibration feeds the same uint8 calibration
images normalised with the model's recorded mean/std.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from edge_encoder.core.contract import normalize_images
from edge_encoder.core.subsets import seeded_rows
from edge_encoder.export.onnx_export import (
    INPUT_NAME,
    INPUT_PREFIX,
    PREPROCESS_PREFIX,
    TAIL_PREFIX,
    read_metadata,
    region_node_names,
    set_metadata,
)
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

VARIANTS = ("fp32", "fp16", "int8_trt", "int8_cpu")
FP16_MAX = float(np.finfo(np.float16).max)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    uses: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def _boundary(model: onnx.ModelProto) -> tuple[str, str]:
    """Names of the body's input tensor (from preprocessing, or the float graph input) and output tensor."""
    regions = {k: set(v) for k, v in region_node_names(model).items()}
    produced_by = {out: node for node in model.graph.node for out in node.output}
    graph_inputs = {i.name for i in model.graph.input}
    body_in = body_out = None
    for node in model.graph.node:
        for name in node.input:
            src = produced_by.get(name)
            if src is None:
                if name in graph_inputs and node.name in regions["body"] and not regions["preprocess"]:
                    body_in = name  # float_nchw: the body reads the graph input directly
                continue
            if node.name in regions["body"] and src.name in regions["preprocess"]:
                body_in = name
            if node.name in regions["tail"] and src.name in regions["body"]:
                body_out = name
    if body_in is None or body_out is None:
        raise ValueError("model has no preprocess -> body -> tail structure (was it built by export.onnx_export?)")
    return body_in, body_out


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 variant of an assembled FP32 encoder: body initializers/constants/compute in FP16.

    Inserts ``Cast(fp32 -> fp16)`` after preprocessing (``preprocess/cast_fp16``) or, for a float input
    without preprocessing, right after the graph input (``input/cast_fp16``), and ``Cast(fp16 -> fp32)``
    before the tail.
    Weights beyond the FP16 range are clipped (logged), since inf weights would poison the output.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    body_in, body_out = _boundary(model)
    body_names = set(region_node_names(model)["body"])
    uses = _consumers(model)
    inits = {t.name: t for t in g.initializer}
    for name, tensor in inits.items():
        users = uses.get(name, [])
        if tensor.data_type != TensorProto.FLOAT or not users or any(u.name not in body_names for u in users):
            continue
        tensor.CopyFrom(_to_fp16(tensor))
    for node in g.node:
        if node.name not in body_names:
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:  # Constant
                attr.t.CopyFrom(_to_fp16(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    half_in, float_out = body_in + "/fp16", body_out + "/fp32"
    for node in g.node:
        if node.name in body_names:
            node.input[:] = [half_in if n == body_in else n for n in node.input]
        elif node.name.startswith(TAIL_PREFIX):
            node.input[:] = [float_out if n == body_out else n for n in node.input]
    nodes = list(g.node)
    first_body = next(i for i, n in enumerate(nodes) if n.name in body_names)
    in_prefix = INPUT_PREFIX if body_in in {i.name for i in g.input} else PREPROCESS_PREFIX
    nodes.insert(first_body, helper.make_node("Cast", [body_in], [half_in], to=TensorProto.FLOAT16,
                                              name=in_prefix + "cast_fp16"))
    first_tail = next(i for i, n in enumerate(nodes) if n.name.startswith(TAIL_PREFIX))
    nodes.insert(first_tail, helper.make_node("Cast", [body_out], [float_out], to=TensorProto.FLOAT,
                                              name=TAIL_PREFIX + "cast_fp32"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    set_metadata(model, _variant_meta(model, "fp16"))
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _to_fp16(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor)
    if np.abs(array).max(initial=0.0) > FP16_MAX:
        logger.warning("clipping %s to the FP16 range", tensor.name)
    return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def _variant_meta(model: onnx.ModelProto, precision: str) -> dict[str, str]:
    meta = read_metadata(model)
    meta["precision"] = precision
    return {"edge_encoder." + k: v for k, v in meta.items()}


@dataclass(frozen=True)
class QuantConfig:
    """Static PTQ settings for one INT8 flavour (see module docstring).

    Attributes:
        activation_type / weight_type: ``"int8"`` or ``"uint8"``.
        activation_symmetric / weight_symmetric: symmetric ranges give zero-point 0.
        per_channel: per-output-channel weight scales.
        calibrate_method: ``"percentile"`` (default; ``int8_cpu``), ``"minmax"`` or ``"entropy"`` (``int8_trt``'s
            default, see ``INT8_FLAVOURS``) (ORT ``CalibrationMethod``).
            Percentile clips each activation range at the 99.999th percentile of |x| instead of spending the 8-bit
            range on rare outliers. Measured on a trained ``cifar10_cpu`` encoder (512 calibration images,
            calibration seeds 0 / 1, against FP32 on ``cifar10_dev``): ``int8_trt`` top-10 neighbour agreement
            0.913 / 0.915 with min/max, 0.927 / 0.928 with percentile, 1st-percentile cosine 0.9987 -> 0.9991;
            ``int8_cpu`` 0.946 / 0.944 -> 0.947 / 0.949; kNN top-1 within a few queries of 2,000 either way.
            (Those figures predate the TensorRT placement; for it, percentile is again the most faithful to FP32:
            docs/BENCHMARKS.md, "int8_trt for TensorRT".)
            Calibration runs one batch per pass (see ``_ImageReader``), so the histograms cost bounded memory.
        placement: ``"onnxruntime"`` (ORT's defaults, for ORT's CPU kernels) or ``"tensorrt"`` (NVIDIA's Q/DQ
            placement, FP32 biases; see ``PLACEMENTS``).
        float_input_convs: leave the convolutions that read the normalised image (the stem) in FP32 (see
            ``input_convs``).
    """

    activation_type: str
    weight_type: str
    activation_symmetric: bool
    weight_symmetric: bool = True
    per_channel: bool = True
    calibrate_method: str = "percentile"
    placement: str = "onnxruntime"
    float_input_convs: bool = True


# Where Q/DQ go. "onnxruntime": ONNX Runtime's defaults (every quantizable op's inputs and outputs, biases as
# INT32 DequantizeLinear), which its CPU kernels fuse into QLinear* ops. "tensorrt": NVIDIA's Q/DQ placement
# recommendations for explicit quantization (TensorRT developer guide, "Explicit Quantization" > "Q/DQ Layer
# Placement Recommendations", https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
# quantized-types-explicit-quantization.html): quantize all inputs of weighted operations (Conv data and
# weights), do not quantize their outputs (TensorRT fuses Conv + ReLU and Conv + Add itself), and at a residual
# Add put the Q/DQ on the residual (skip) branch only, not between Conv and Add, so that the Add fuses into the
# Conv as its INT8 epilogue (NVIDIA/TensorRT tools/tensorflow-quantization/docs/source/docs/
# add_custom_qdq_cases.md, "ResNetV1QDQCase"; the same block as NVIDIA pytorch-quantization's quantized ResNet,
# which quantizes ``identity`` / ``downsample(x)`` before ``out += identity``).
PLACEMENTS = ("onnxruntime", "tensorrt")
# ONNX Runtime's quantize_static options for the TensorRT placement (onnxruntime/quantization/quantize.py, 1.32):
#   op_types_to_quantize=["Conv", "Add"]: nothing else (Relu, pooling, Flatten/Reshape) gets Q/DQ;
#   QuantizeBias=False: "it remains floating-point bias and does not insert any quantization nodes associated
#     with biases" (default True emits INT32 DequantizeLinear, refused by TensorRT: onnx/onnx-tensorrt#850,
#     microsoft/onnxruntime#14229, #17738);
#   OpTypesToExcludeOutputQuantization=["Conv", "Add"]: no Q/DQ on their outputs (ORT's QDQConv and
#     QDQOperatorBase otherwise quantize node.output[0]).
# ORT quantizes both Add inputs; _keep_residual_qdq_only then removes the pair on the Conv (main) branch.
_TRT_PLACEMENT = {
    "op_types_to_quantize": ["Conv", "Add"],
    "extra_options": {"QuantizeBias": False, "OpTypesToExcludeOutputQuantization": ["Conv", "Add"]},
}


INT8_FLAVOURS: dict[str, QuantConfig] = {
    # Entropy for int8_trt: TensorRT's own choice ("This is the preferred calibrator. This is the required
    # calibrator for DLA", NvInfer.h, IInt8EntropyCalibrator2), and measured: on two trained cifar10_cpu encoders
    # and 4-6 calibration subsets each, kNN top-1 vs FP32 -0.09 points on average with entropy, -0.51 with
    # percentile (entropy ahead in 9 of 10 pairs; docs/BENCHMARKS.md, "int8_trt calibration").
    "int8_trt": QuantConfig(activation_type="int8", weight_type="int8", activation_symmetric=True,
                            calibrate_method="entropy", placement="tensorrt"),
    "int8_cpu": QuantConfig(activation_type="uint8", weight_type="int8", activation_symmetric=False),
}


class _ImageReader:
    """ORT ``CalibrationDataReader`` over uint8 NHWC images, in fixed batches (deterministic order).

    With ``normalize=(mean, std)`` each batch is fed as float32 NCHW ``((x / 255) - mean) / std`` (for a
    ``float_nchw`` encoder), so both layouts calibrate on the same images. ``len`` and ``set_range`` (in
    batches) let ONNX Runtime calibrate one batch at a time (``CalibStridedMinMax``, used for every method):
    the histogram methods then hold one batch of activations instead of all of them.
    """

    def __init__(self, images: np.ndarray, batch_size: int,
                 normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> None:
        self._images, self._batch_size, self._normalize = images, batch_size, normalize
        self._next, self._stop = 0, len(self)

    def __len__(self) -> int:
        return -(-len(self._images) // self._batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._stop = start_index, min(end_index, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._stop:
            return None
        batch = self._images[self._next * self._batch_size:(self._next + 1) * self._batch_size]
        self._next += 1
        if self._normalize is not None:
            return {INPUT_NAME: normalize_images(batch, *self._normalize)}
        return {INPUT_NAME: np.ascontiguousarray(batch)}


def _calibration_normalize(model: onnx.ModelProto) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` from the metadata when the encoder takes a float input, else ``None`` (uint8 input)."""
    if model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8:
        return None
    meta = read_metadata(model)
    if "mean" not in meta or "std" not in meta:
        raise ValueError("float-input encoder has no mean/std metadata; cannot normalise calibration images")
    return tuple(float(v) for v in meta["mean"].split(",")), tuple(float(v) for v in meta["std"].split(","))


def quantize_int8(model: onnx.ModelProto, calibration_images: np.ndarray, flavour: str, *,
                  config: QuantConfig | None = None, batch_size: int = 32) -> onnx.ModelProto:
    """Static INT8 QDQ quantization of the body of an assembled FP32 encoder.

    Args:
        model: the FP32 encoder (``images`` uint8 ``(N, H, W, 3)`` or normalised float32 ``(N, 3, H, W)``
            -> ``embeddings``).
        calibration_images: uint8 ``(N, H, W, 3)``, a deterministic recorded set of training images (for a
            float-input encoder they are normalised with its recorded mean/std before calibration).
        flavour: ``"int8_trt"`` or ``"int8_cpu"``; ``config`` overrides its defaults.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if flavour not in INT8_FLAVOURS:
        raise ValueError(f"INT8 flavour must be one of {sorted(INT8_FLAVOURS)}, got {flavour!r}")
    if calibration_images.ndim != 4 or calibration_images.dtype != np.uint8 or len(calibration_images) == 0:
        raise ValueError(f"calibration_images must be a non-empty uint8 (N, H, W, 3) array, got "
                         f"{calibration_images.dtype} {calibration_images.shape}")
    cfg = config or INT8_FLAVOURS[flavour]
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if cfg.calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {sorted(methods)}, got {cfg.calibrate_method!r}")
    method = methods[cfg.calibrate_method]
    if cfg.placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {cfg.placement!r}")
    placement = _TRT_PLACEMENT if cfg.placement == "tensorrt" else {"op_types_to_quantize": None, "extra_options": {}}
    regions = region_node_names(model)
    with tempfile.TemporaryDirectory(prefix="edge_encoder_quant_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / f"{flavour}.onnx"
        onnx.save(model, src)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print progress to stdout
            quantize_static(
                str(src), str(dst), _ImageReader(calibration_images, batch_size, _calibration_normalize(model)),
                quant_format=QuantFormat.QDQ,
                activation_type=qtype[cfg.activation_type], weight_type=qtype[cfg.weight_type],
                per_channel=cfg.per_channel, calibrate_method=method,
                op_types_to_quantize=placement["op_types_to_quantize"],
                nodes_to_exclude=(regions["preprocess"] + regions["input"] + regions["tail"]
                                  + (input_convs(model) if cfg.float_input_convs else [])),
                # No "CalibMaxIntermediateOutputs": in onnxruntime 1.32 min/max calibration discards each full
                # chunk of batches without folding it into the ranges, i.e. it would calibrate on the remainder
                # (and min/max needs no chunking: its calibration outputs are per-tensor minima and maxima).
                extra_options={"ActivationSymmetric": cfg.activation_symmetric,
                               "WeightSymmetric": cfg.weight_symmetric,
                               # one batch per collection pass (despite its name, for every method): min/max
                               # folds each pass into running ranges (same result), the histogram methods
                               # merge each pass into running histograms, so memory no longer grows with the
                               # number of calibration images
                               "CalibStridedMinMax": 1,
                               **placement["extra_options"]},
            )
        quantized = onnx.load(dst)
    if cfg.placement == "tensorrt":
        quantized = _keep_residual_qdq_only(quantized)
    set_metadata(quantized, _variant_meta(model, flavour))
    quantized.metadata_props.append(onnx.StringStringEntryProto(
        key="edge_encoder.quantization", value=f"QDQ act={cfg.activation_type}{'/sym' if cfg.activation_symmetric else ''} "
                                              f"w={cfg.weight_type}{'/per-channel' if cfg.per_channel else ''} "
                                              f"calib={cfg.calibrate_method} n={len(calibration_images)} "
                                              f"placement={cfg.placement}"
                                              f"{' stem=fp32' if cfg.float_input_convs else ''}"))
    return quantized


_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# Ops that only move or relabel the image tensor between the body's input and its first convolution.
_LAYOUT_OPS = ("Transpose", "Identity", "Reshape", "Cast")


def input_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the body's ``Conv`` nodes that read the normalised image (through layout-only ops, if any).

    Why they stay FP32: the image arrives as exact 8-bit values, and after per-channel normalisation one
    per-tensor symmetric INT8 scale cannot hold the three channels' 256 levels each (about one bit is lost
    before the first layer, plus the calibrated clipping), and that error reaches every later layer. Measured
    on trained ``cifar10_cpu`` encoders (docs/BENCHMARKS.md, "INT8 stem in FP32"), keeping the stem in
    FP32 raised neighbour agreement with FP32, for a 3-input-channel conv: about 1% of a CIFAR-stem ResNet-18's
    MACs, about 6% of an ImageNet-stem one's. This is the "partial quantization" of NVIDIA's INT8 study (Wu et
    al. 2020, "Integer Quantization for Deep Learning Inference", arXiv:2004.09602: leave the most sensitive
    layers in floating point). TensorRT runs a Conv without Q/DQ in float and may fuse the Q of the next
    layer's input into it (TensorRT developer guide, "Explicit Quantization", Q/DQ layer fusion).
    """
    body_in, _ = _boundary(model)
    uses = _consumers(model)
    found, frontier = [], [body_in]
    while frontier:
        tensor = frontier.pop()
        for node in uses.get(tensor, []):
            if node.op_type == "Conv" and node.input[0] == tensor:
                found.append(node.name)
            elif node.op_type in _LAYOUT_OPS and node.input[0] == tensor:
                frontier.append(node.output[0])
    return found


def _depths(model: onnx.ModelProto) -> dict[str, int]:
    """Longest path (in compute nodes; Q/DQ count 0) from the graph inputs to every tensor."""
    depth: dict[str, int] = {}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        d = max((depth.get(name, 0) for name in node.input if name), default=0)
        for out in node.output:
            depth[out] = d + (0 if node.op_type in _QDQ_OPS else 1)
    return depth


def _keep_residual_qdq_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """At each quantized residual ``Add``, drop the Q/DQ pair on the branch that a Conv produces (the main one).

    The main branch is the deeper input (more compute nodes since the graph input); when it comes straight from
    a Conv, TensorRT fuses that Conv with the Add only if no Q/DQ sits between them (see ``_TRT_PLACEMENT``),
    while the residual branch keeps its Q/DQ (shared with the Conv that reads the same tensor, if any).
    """
    g = model.graph
    producer = {out: node for node in g.node for out in node.output}
    depth = _depths(model)
    uses = _consumers(model)
    dropped: set[str] = set()
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        pairs = []
        for name in add.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            pairs.append((dq, q) if q is not None and q.op_type == "QuantizeLinear" else None)
        if None in pairs:
            continue
        main = max((0, 1), key=lambda i: depth.get(add.input[i], 0))
        dq, q = pairs[main]
        source = producer.get(q.input[0])
        if source is None or source.op_type != "Conv" or len(uses[dq.output[0]]) != 1 or len(uses[q.output[0]]) != 1:
            continue
        add.input[main] = q.input[0]
        dropped.update((dq.name, q.name))
    kept = [n for n in g.node if n.name not in dropped]
    del g.node[:]
    g.node.extend(kept)
    used = {name for node in g.node for name in node.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


def select_calibration_indices(n_available: int, n: int = 256, seed: int = 0) -> np.ndarray:
    """Deterministic calibration subset: ``n`` sorted indices drawn without replacement with ``seed``."""
    return seeded_rows(n_available, n, seed)


def make_variant(fp32_model: onnx.ModelProto, variant: str, calibration_images: np.ndarray | None = None,
                 quant_config: QuantConfig | None = None) -> onnx.ModelProto:
    """Build one of ``VARIANTS`` from the FP32 encoder."""
    if variant == "fp32":
        return fp32_model
    if variant == "fp16":
        return convert_fp16(fp32_model)
    if variant in INT8_FLAVOURS:
        if calibration_images is None:
            raise ValueError(f"variant {variant!r} needs calibration_images")
        return quantize_int8(fp32_model, calibration_images, variant, config=quant_config)
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
