"""The INT8 graphs a Jetson Orin DLA build uses, made at export from ``int8_trt`` and the same calibration
(``export.dla_batch`` > 0). UNVERIFIED ON AN ORIN: nothing here has been built or run on a DLA; the files follow the
NVIDIA sources cited below, and ``edge-encoder build --dla-core`` records what TensorRT actually placed where.

Why ``int8_trt`` itself is not the DLA graph:

- NVIDIA's Orin DLA operator table lists QuantizeLinear and DequantizeLinear as "Reconstruction", not "Native":
  "Can be collapsed to INT8 scaling factor, switching from explicit to implicit quantization"
  (NVIDIA/Deep-Learning-Accelerator-SW operators/README.md). Through TensorRT 10 the DLA takes INT8 from implicit
  quantization: NVIDIA's qdq-translator (same repository, tools/qdq-translator) turns a Q/DQ graph into a Q/DQ-free
  graph plus a TensorRT calibration cache for exactly this, built with ``trtexec --int8 --fp16 --calib=<cache>
  --useDLACore=0``. ``int8_trt`` has Q/DQ only on convolution inputs and residual branches (NVIDIA's GPU placement),
  so its convolution and Add outputs carry no scale: a DLA build from it runs those layers FP16 or on the GPU.
- TensorRT 11 has DLA again only from 11.4.1 (Jetson AGX Orin, JetPack 7.2.2 or later), strongly typed: "precision is
  determined by network tensor types instead of the per-precision builder flags" (TensorRT 11.4.1 "Strongly Typed
  Networks for DLA"), and ``--int8`` / ``--calib`` are gone from trtexec (TensorRT 10.x -> 11.x trtexec migration).
  INT8 on the DLA then needs Q/DQ on every DLA tensor, which is what Model-Optimizer's ``target_dla`` does: "enable
  Q/DQ nodes to be placed in all tensors for optimal DLA deployment" (NVIDIA/Model-Optimizer
  modelopt/onnx/quantization/quantize.py, ``quantize(..., target_dla=...)``).

So a DLA bundle carries, next to ``encoder_int8_trt.onnx`` (manifest ``variants.int8_trt.dla``, see
``export.bundle``)::

    encoder_int8_trt_dla.onnx      TensorRT 10: int8_trt without its Q/DQ (weights = int8_trt's INT8 weights times
                                   their scales), built weakly typed with INT8 + FP16 and a calibrator that only
                                   returns the cache below (``device.tensorrt``; trtexec: ``--int8 --fp16 --calib``)
    calibration_dla.cache          TensorRT calibration cache (``device.calibration_cache``): a scale for every
                                   tensor of the convolutional trunk (the layers DLA runs)
    encoder_int8_trt_dla_qdq.onnx  TensorRT >= 11.4.1: the same graph with Q/DQ on every trunk tensor, scales from
                                   the same cache (strongly typed: ``trtexec --stronglyTyped``)

The scales, for every tensor of the trunk (inputs and outputs of every convolution, ReLU, Add, pooling... before the
global pooling head, ``export.trt_conformance.dla_trunk``):

- a tensor ``int8_trt`` quantizes (convolution inputs, residual branches) gets exactly int8_trt's Q/DQ scale;
- every other one (convolution and Add outputs, the trunk's last ReLU output) gets the scale int8_trt's own
  calibration gives it: ONNX Runtime's calibrator (``onnxruntime.quantization.calibrate.create_calibrator``), the
  same method (``QuantConfig.calibrate_method``: entropy for int8_trt), the same images in the same batches
  (``export.precision._ImageReader``, ``quantize_int8``'s batch size, one batch per pass as its
  ``CalibStridedMinMax = 1``), run on the same FP32 graph, and turned into a scale by ONNX Runtime's own
  ``compute_scale_zp`` with int8_trt's symmetric INT8 range [-127, 127] (scale = max(|min|, |max|) / 127), as
  ``quantize_static`` does for the tensors it quantizes. ONNX Runtime's histogram calibrators treat each tensor on
  its own, so this reproduces int8_trt's scales for the tensors both have; :func:`build_dla_int8` checks that it does
  and records the largest difference (``scales.int8_trt_max_rel_diff``).

Weights: in both graphs the convolution weights are int8_trt's INT8 weights (per output channel, symmetric). The
TensorRT 10 graph holds them dequantized (INT8 value times scale), which TensorRT's implicit quantization maps back
onto the same integers: per-channel max / 127, the rule qdq-translator checks QAT weight scales against
(``verify_weight_scales``, "how TensorRT performs weight quantization"). A convolution int8_trt keeps float (the stem,
``export.int8_stem = 'fp32'``) is quantized here the same way (per channel, max / 127).

The TensorRT >= 11.4.1 graph follows Model-Optimizer's ``target_dla`` placement as its source shows it
(modelopt/onnx/quantization/int8.py ``quantize`` with ``target_dla``: every op type of the model is quantized, every
node of those types selected; ort_utils.py ``configure_ort``: ``OpTypesToExcludeOutputQuantization`` = every op type,
``DedicatedQDQPair`` False, ``QuantizeBias`` False, ``ActivationSymmetric`` True, per-channel Conv weights on axis 0).
So: one shared Q -> DQ pair in front of every activation input of every quantized node, none on outputs (an output is
quantized where the next node reads it), biases FP32. What differs from running ``modelopt.onnx.quantization
--target_dla``, on purpose:

1. scope: only the DLA trunk and the head's input are quantized; ModelOpt would also quantize the preprocessing, the
   pooling head and the L2 tail, which run on the GPU and stay FP32 here (the manifest's ``tail_precision``);
2. no FP16 conversion of what is left float (ModelOpt's ``high_precision_dtype`` defaults to fp16; we keep FP32,
   its ``fp32`` choice) and the exported opset is kept (ModelOpt raises it to 19 for FP16 scales; ours are FP32);
3. weights as INT8 initializers + DequantizeLinear (ModelOpt's ``dq_only``), as int8_trt ships them;
4. the scales are the cache's (above), not a second calibration.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from edge_encoder.device.calibration_cache import DEFAULT_TENSORRT_VERSION, read_cache, write_cache
from edge_encoder.export.onnx_export import read_metadata, save_model, set_metadata
from edge_encoder.export.precision import (
    INT8_FLAVOURS,
    QuantConfig,
    _calibration_normalize,
    _ImageReader,
    quantize_int8,
)
from edge_encoder.export.trt_conformance import dla_trunk
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

IMPLICIT_FILE = "encoder_int8_trt_dla.onnx"
CACHE_FILE = "calibration_dla.cache"
EXPLICIT_FILE = "encoder_int8_trt_dla_qdq.onnx"
# TensorRT 11 has DLA on Jetson AGX Orin from 11.4.1 (JetPack 7.2.2 or later): TensorRT 11.4.1 release notes.
EXPLICIT_MIN_TENSORRT = "11.4.1"
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# int8_trt's Q/DQ scale and the recomputed one agree to float32 rounding (they are computed the same way); beyond this
# the recomputation is not int8_trt's calibration and the build stops rather than ship a cache that disagrees.
_SCALE_RTOL = 1e-5


@dataclass(frozen=True)
class DlaInt8Graphs:
    """What :func:`build_dla_int8` made: the two graphs, the cache's scales and bytes, and how they were obtained."""

    implicit: onnx.ModelProto
    explicit: onnx.ModelProto
    scales: dict[str, float]
    cache: bytes
    stats: dict[str, Any]


# --------------------------------------------------------------------------------------------------- tensors


def dla_tensors(model: onnx.ModelProto) -> list[str]:
    """The activation tensors of the DLA trunk (inputs and outputs of its nodes but weights and constants), in graph
    order: the tensors a DLA INT8 build needs a scale for. Q/DQ nodes and their tensors are not counted (call it on
    a Q/DQ-free graph)."""
    inits = {t.name for t in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    found: dict[str, None] = {}
    for node in dla_trunk(model):
        if node.op_type in _QDQ:
            continue
        for name in list(node.input) + list(node.output):
            if name and name not in inits and name not in constants:
                found.setdefault(name)
    return list(found)


def qdq_scales(model: onnx.ModelProto) -> dict[str, float]:
    """``{tensor: scale}`` of every per-tensor QuantizeLinear on an activation of ``model`` (what int8_trt quantizes:
    the tensor a QuantizeLinear reads, with its scale)."""
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scale = numpy_helper.to_array(inits[node.input[1]])
            if scale.size != 1:
                raise ValueError(f"{node.name}: per-channel scale on activation {node.input[0]!r}")
            value = float(scale.reshape(()))
            if out.setdefault(node.input[0], value) != value:
                raise ValueError(f"tensor {node.input[0]!r} is quantized with two scales ({out[node.input[0]]} and "
                                 f"{value})")
    return out


# --------------------------------------------------------------------------------------------- calibration


def calibrate_scales(fp32_model: onnx.ModelProto, tensors: list[str], calibration_images: np.ndarray,
                     config: QuantConfig) -> dict[str, float]:
    """The INT8 scale of each of ``tensors`` from ONNX Runtime's calibrator, run as ``quantize_int8`` runs it for
    ``config`` (method, images, batches, one batch per pass), scale by ONNX Runtime's ``compute_scale_zp`` for
    ``config.activation_type`` / ``activation_symmetric`` (see the module docstring).

    Raises:
        ValueError: a tensor the calibrator did not see, or an activation type other than int8 (the DLA's).
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    if config.activation_type != "int8":
        raise ValueError(f"DLA INT8 needs int8 activations, the int8_trt config has {config.activation_type!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    wanted = set(tensors)
    producers = {o: n for n in fp32_model.graph.node for o in n.output}
    consumers = {i: n for n in fp32_model.graph.node for i in n.input}
    op_types = sorted({producers[t].op_type for t in wanted if t in producers}
                      | {consumers[t].op_type for t in wanted if t in consumers})
    batch = inspect.signature(quantize_int8).parameters["batch_size"].default  # the batches int8_trt saw
    reader = _ImageReader(calibration_images, batch, _calibration_normalize(fp32_model))
    with tempfile.TemporaryDirectory(prefix="edge_encoder_dla_calib_") as tmp:
        path = Path(tmp) / "fp32.onnx"
        onnx.save(fp32_model, path)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print progress
            calibrator = create_calibrator(path, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=methods[config.calibrate_method], extra_options={})
            for start in range(len(reader)):  # quantize_int8's CalibStridedMinMax = 1: one batch per pass
                reader.set_range(start, start + 1)
                calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        del calibrator
    missing = sorted(wanted - set(ranges.data))
    if missing:
        raise ValueError(f"the calibrator saw no values for {len(missing)} DLA tensor(s), e.g. {missing[0]!r}")
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, symmetric=config.activation_symmetric)
    scales = {}
    for name in tensors:
        low, high = ranges.data[name].range_value
        _, scale = compute_scale_zp(low, high, qmin, qmax, config.activation_symmetric)
        scales[name] = float(np.asarray(scale, np.float32).squeeze())  # as QDQQuantizer: scale.squeeze()
    return scales


# ------------------------------------------------------------------------------------------------- graphs


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis % q.ndim] = scale.size
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float64)
    return ((q.astype(np.float64) - zero.reshape(shape)) * scale.astype(np.float64).reshape(shape)).astype(np.float32)


def strip_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``model`` without Q/DQ (qdq-translator's Q/DQ-free graph): every consumer of an activation DequantizeLinear
    reads the tensor its QuantizeLinear quantized; every weight DequantizeLinear becomes a float initializer holding
    the dequantized INT8 weight, named after the original weight (ONNX Runtime's ``<weight>_quantized``).

    Returns ``(graph, {float weight name: (int8 weight, per-channel scale)})``.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    rename: dict[str, str] = {}
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    new_inits: list[onnx.TensorProto] = []
    for node in g.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a weight: INT8 initializer -> float initializer
            q = numpy_helper.to_array(inits[source])
            scale = numpy_helper.to_array(inits[node.input[1]])
            zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
            name = source[: -len("_quantized")] if source.endswith("_quantized") else node.output[0]
            if name in inits and name != source:
                name = node.output[0]
            float_weight = _dequantize(q, scale, zero, int(_attr(node, "axis", 1)))
            new_inits.append(numpy_helper.from_array(float_weight, name))
            weights[name] = (q, scale.astype(np.float32))
            rename[node.output[0]] = name
        else:
            quant = producers.get(source)
            if quant is None or quant.op_type != "QuantizeLinear":
                raise ValueError(f"{node.name}: DequantizeLinear of {source!r}, which no QuantizeLinear produces")
            rename[node.output[0]] = quant.input[0]
    if any(o.name in rename for o in g.output):
        raise ValueError("a graph output comes out of a DequantizeLinear; cannot strip it")
    kept = [n for n in g.node if n.op_type not in _QDQ]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    del g.node[:]
    g.node.extend(kept)
    used = {name for node in g.node for name in node.input}
    remaining = [t for t in g.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del g.initializer[:]
    g.initializer.extend(remaining)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), weights


def _quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric INT8 (axis 0): scale = max |w| / 127 (1 for an all-zero channel), as ONNX Runtime
    quantizes int8_trt's weights and as TensorRT quantizes weights itself (module docstring)."""
    flat = np.abs(weight.reshape(weight.shape[0], -1).astype(np.float64)).max(axis=1)
    scale = np.where(flat > 0, flat / 127.0, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq_everywhere(model: onnx.ModelProto, scales: dict[str, float],
                          weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """The strongly typed DLA graph (TensorRT >= 11.4.1): on a Q/DQ-free ``model``, one shared QuantizeLinear ->
    DequantizeLinear pair (INT8, zero-point 0, scale from ``scales``) in front of every activation input of every
    quantized node — the DLA trunk, and the head nodes that read it — and INT8 weights + per-channel (axis 0)
    DequantizeLinear for every convolution weight of the trunk (``weights`` where given, else quantized here).
    Model-Optimizer's ``target_dla`` placement, restricted as the module docstring says.

    Raises:
        ValueError: a quantized tensor without a scale.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    constants = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    trunk = {n.name for n in dla_trunk(model)}
    trunk_out = {o for n in g.node if n.name in trunk for o in n.output}
    quantized = [n for n in g.node if n.name in trunk or (n.name not in trunk and set(n.input) & trunk_out)]
    names = {n.name for n in g.node} | {o for n in g.node for o in n.output} | set(inits) | {i.name for i in g.input}

    def fresh(name: str) -> str:
        if name in names:
            raise ValueError(f"cannot insert Q/DQ: the name {name!r} is taken")
        names.add(name)
        return name

    before: list[onnx.NodeProto] = []  # weight DQs and Q/DQ of graph inputs, at the top
    after: dict[str, list[onnx.NodeProto]] = {}  # Q/DQ right after the node producing the tensor
    producer = {o: n.name for n in g.node for o in n.output}
    done: dict[str, str] = {}
    new_inits: list[onnx.TensorProto] = []
    for node in quantized:
        for index, name in enumerate(node.input):
            if not name or name in constants:
                continue
            if name in inits:
                if node.op_type != "Conv" or index != 1:
                    continue  # biases (and any other constant) stay float: QuantizeBias False
                if name not in done:
                    q, scale = weights.get(name) or _quantize_weight(numpy_helper.to_array(inits[name]))
                    q_name, s_name, z_name = (fresh(f"{name}_quantized"), fresh(f"{name}_scale"),
                                              fresh(f"{name}_zero_point"))
                    new_inits += [numpy_helper.from_array(np.asarray(q, np.int8), q_name),
                                  numpy_helper.from_array(np.asarray(scale, np.float32), s_name),
                                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name)]
                    out = fresh(f"{name}_DequantizeLinear_Output")
                    before.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], axis=0,
                                                   name=fresh(f"{name}_DequantizeLinear")))
                    done[name] = out
                node.input[index] = done[name]
                continue
            if name not in done:
                if name not in scales:
                    raise ValueError(f"no scale for tensor {name!r}, read by {node.name}")
                s_name, z_name = fresh(f"{name}_scale"), fresh(f"{name}_zero_point")
                new_inits += [numpy_helper.from_array(np.array(scales[name], np.float32), s_name),
                              numpy_helper.from_array(np.array(0, np.int8), z_name)]
                q_out, dq_out = fresh(f"{name}_QuantizeLinear_Output"), fresh(f"{name}_DequantizeLinear_Output")
                pair = [helper.make_node("QuantizeLinear", [name, s_name, z_name], [q_out],
                                         name=fresh(f"{name}_QuantizeLinear")),
                        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                         name=fresh(f"{name}_DequantizeLinear"))]
                (after.setdefault(producer[name], []) if name in producer else before).extend(pair)
                done[name] = dq_out
            node.input[index] = done[name]
    nodes = list(before)
    for node in g.node:
        nodes.append(node)
        nodes.extend(after.get(node.name, []))
    del g.node[:]
    g.node.extend(nodes)
    used = {name for node in g.node for name in node.input}
    remaining = [t for t in list(g.initializer) + new_inits if t.name in used]
    del g.initializer[:]
    g.initializer.extend(remaining)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _describe(model: onnx.ModelProto, what: str) -> None:
    meta = read_metadata(model)
    meta["dla"] = what
    set_metadata(model, {"edge_encoder." + k: v for k, v in meta.items()})


def build_dla_int8(fp32_model: onnx.ModelProto, int8_model: onnx.ModelProto, calibration_images: np.ndarray,
                   config: QuantConfig | None = None, *,
                   tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> DlaInt8Graphs:
    """Both DLA graphs and the calibration cache for ``int8_model`` (int8_trt made from ``fp32_model`` with
    ``calibration_images`` and ``config``); see the module docstring.

    Raises:
        ValueError: int8_trt's scale for a tensor and the recomputed one disagree (not the same calibration), or a
            trunk tensor gets no scale.
    """
    config = config or INT8_FLAVOURS["int8_trt"]
    implicit, weights = strip_qdq(int8_model)
    tensors = dla_tensors(implicit)
    calibrated = calibrate_scales(fp32_model, tensors, calibration_images, config)
    from_qdq = {t: s for t, s in qdq_scales(int8_model).items() if t in calibrated}
    rel = {t: abs(calibrated[t] - s) / s for t, s in from_qdq.items()}
    worst = max(rel, key=rel.get, default=None)
    if worst is not None and rel[worst] > _SCALE_RTOL:
        raise ValueError(f"DLA calibration does not reproduce int8_trt's scale of {worst!r} ({calibrated[worst]!r} vs "
                         f"{from_qdq[worst]!r}): not the same calibration, refusing to write a cache that disagrees")
    scales = {t: from_qdq.get(t, calibrated[t]) for t in tensors}  # int8_trt's own value wherever it has one
    cache = write_cache(scales, tensorrt_version)
    if read_cache(cache)[2] != {t: float(np.float32(s)) for t, s in scales.items()}:  # the file says what we computed
        raise ValueError("the calibration cache does not read back the scales written into it")
    explicit = insert_qdq_everywhere(implicit, scales, weights)
    _describe(implicit, f"TensorRT 10 DLA INT8 (implicit): int8_trt without Q/DQ; scales in {CACHE_FILE}")
    _describe(explicit, f"TensorRT >= {EXPLICIT_MIN_TENSORRT} DLA INT8 (strongly typed): Q/DQ on every DLA tensor")
    stats = {"tensors": len(tensors), "from_int8_trt_qdq": len(from_qdq), "calibrated": len(tensors) - len(from_qdq),
             "int8_trt_max_rel_diff": float(rel[worst]) if worst is not None else None,
             "method": config.calibrate_method, "images": int(len(calibration_images))}
    return DlaInt8Graphs(implicit, explicit, scales, cache, stats)


def write_dla_int8(graphs: DlaInt8Graphs, folder: Path) -> dict[str, Any]:
    """Write the three files into ``folder``; returns the manifest entry ``variants.int8_trt.dla`` (files with
    SHA-256 and size; :func:`device.manifest.check_manifest` checks its shape)."""
    from edge_encoder.core.files import atomic_write_bytes, file_sha256

    implicit_sha = save_model(graphs.implicit, folder / IMPLICIT_FILE)
    explicit_sha = save_model(graphs.explicit, folder / EXPLICIT_FILE)
    atomic_write_bytes(folder / CACHE_FILE, graphs.cache)
    header = graphs.cache.split(b"\n", 1)[0].decode()
    return {
        "tensorrt10": {
            "file": IMPLICIT_FILE, "sha256": implicit_sha, "bytes": (folder / IMPLICIT_FILE).stat().st_size,
            "quantization": "implicit: int8_trt without Q/DQ (INT8 weights dequantized), activation scales in the "
                            "calibration cache; build weakly typed with INT8 + FP16 (edge-encoder build; trtexec "
                            "--int8 --fp16 --calib)",
            "calibration_cache": {"file": CACHE_FILE, "sha256": file_sha256(folder / CACHE_FILE), "header": header,
                                  "scales": dict(graphs.stats)},
        },
        "tensorrt11": {
            "file": EXPLICIT_FILE, "sha256": explicit_sha, "bytes": (folder / EXPLICIT_FILE).stat().st_size,
            "min_tensorrt": EXPLICIT_MIN_TENSORRT,
            "quantization": "explicit: Q/DQ on every DLA tensor (Model-Optimizer target_dla placement, trunk only), "
                            "scales of the calibration cache; build strongly typed",
            "qdq_tensors": len(qdq_scales(graphs.explicit)),
        },
        "verified_on_dla": False,
    }
