"""Hardened ONNX export of a backbone as a deployable encoder graph.

The exported graph is the *engine contract*: ``images`` uint8 ``(N, H, W, 3)`` RGB (camera-native) ->
``embeddings`` float32 ``(N, D)``, rows L2-normalised. It is assembled from three named parts so that
later passes (FP16 conversion, INT8 quantization) can find them without guessing:

- ``preprocess/*``: Cast -> Transpose -> x * (1 / (255 std)) + (-mean / std), FP32;
- the backbone, exported by PyTorch (BatchNorm folded into the convolutions beforehand, in FP32);
- ``tail/*``: the L2 normalisation, FP32 in every precision variant (it overflows in FP16).

Optional input layout ``input_layout="float_nchw"`` (for DeepStream/Triton pipelines that normalise
upstream): ``images`` float32 ``(N, 3, H, W)``, already ``((x / 255) - mean) / std`` with the recorded
mean/std, fed straight into the backbone (no ``preprocess/*`` nodes). Output contract unchanged.

The exporter is chosen explicitly (``"dynamo"``, ``"torchscript"`` or ``"auto"`` = dynamo, falling back to
TorchScript when dynamo fails or does not honour the requested opset), and the result is checked: opset,
single self-contained file, static non-batch dims, ``onnx.checker`` with full check, shape inference.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from edge_encoder.core.contract import Preprocess  # the one preprocessing type (issue 17), used here and re-exported
from edge_encoder.core.files import atomic_write_bytes
from onnx import TensorProto, helper, numpy_helper
from torch import nn

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
BATCH_DIM = "batch"
PREPROCESS_PREFIX = "preprocess/"
TAIL_PREFIX = "tail/"
BODY_INPUT = "backbone_input"
BODY_OUTPUT = "backbone_features"
INPUT_PREFIX = "input/"  # boundary adapters on a float input (e.g. the FP16 cast); not preprocessing
EXPORTERS = ("auto", "dynamo", "torchscript")
INPUT_LAYOUTS = ("uint8_nhwc", "float_nchw")
METADATA_PREFIX = "edge_encoder."
# ONNX opsets this module emits correctly (ReduceSum takes axes as an input from 13 on).
MIN_OPSET, MAX_OPSET = 13, 21
# The one default opset (export.config takes it too): the dynamo exporter's native opset, parsed by TensorRT 10/11.
DEFAULT_OPSET = 18


def fold_batchnorm(backbone: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``backbone`` with every Conv2d -> BatchNorm2d pair folded (FP32).

    Folding in PyTorch, in FP32, means no BatchNormalization (training-mode or not) reaches the graph and
    the FP16/INT8 variants start from the same fused weights. Pairs are found as ``convK``/``bnK`` siblings
    (torchvision blocks) and as consecutive Conv2d, BatchNorm2d in ``nn.Sequential`` (downsample paths).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(backbone).eval().float()
    for module in model.modules():
        children = dict(module.named_children())
        for name, child in children.items():
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn = children.get("bn" + name[len("conv"):])
                if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    setattr(module, name, fuse_conv_bn_eval(child, bn))
                    setattr(module, "bn" + name[len("conv"):], nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return model


def _opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _export_dynamo(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=1 << 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=opset, input_names=[BODY_INPUT],
            output_names=[BODY_OUTPUT], dynamic_shapes={"x": {0: batch}}, external_data=False,
            optimize=True, verbose=False,
        )
    assert program is not None
    return program.model_proto


def _export_torchscript(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=opset, input_names=[BODY_INPUT],
            output_names=[BODY_OUTPUT], dynamic_axes={BODY_INPUT: {0: BATCH_DIM}, BODY_OUTPUT: {0: BATCH_DIM}},
            do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
        )
    return onnx.load_from_string(buffer.getvalue())


def export_backbone_graph(backbone: nn.Module, image_size: int, *, opset: int = DEFAULT_OPSET,
                          exporter: str = "auto") -> tuple[onnx.ModelProto, str, list[str]]:
    """Export the (BN-folded) backbone alone: float32 ``(N, 3, H, W)`` -> float32 ``(N, D)``.

    Returns the model (weights inline, simplified with onnxslim), the exporter actually used and notes
    on fallbacks. Raises ``RuntimeError`` when the chosen exporter fails or yields another opset.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    folded = fold_batchnorm(backbone)
    example = torch.zeros(2, 3, image_size, image_size)
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    notes: list[str] = []
    for name in order:
        try:
            model = (_export_dynamo if name == "dynamo" else _export_torchscript)(folded, example, opset)
        except Exception as exc:  # the exporters raise many types; fall back or re-raise below
            notes.append(f"{name} exporter failed: {type(exc).__name__}: {str(exc)[:200]}")
            logger.warning(notes[-1])
            if exporter != "auto":
                raise RuntimeError(notes[-1]) from exc
            continue
        produced = _opset_of(model)
        if produced != opset:
            # The dynamo exporter exports at its own opset and may fail to down-convert silently.
            notes.append(f"{name} exporter produced opset {produced}, not the requested {opset}")
            logger.warning(notes[-1])
            if exporter != "auto":
                raise RuntimeError(notes[-1])
            continue
        return _simplify(model), name, notes
    raise RuntimeError("no exporter produced a valid graph: " + "; ".join(notes))


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    model = onnx.shape_inference.infer_shapes(model)
    slim = onnxslim.slim(model)
    return slim if isinstance(slim, onnx.ModelProto) else model


def _const(name: str, values: Sequence[float] | np.ndarray, shape: Sequence[int], dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype).reshape(shape), name)


def preprocess_nodes(pre: Preprocess, out_name: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes mapping ``images`` uint8 NHWC to normalised float32 NCHW ``out_name``.

    Cast before Transpose: TensorRT handles uint8 only at I/O and in Cast.
    """
    p = PREPROCESS_PREFIX
    # (x / 255 - mean) / std folded into one multiply-add per channel: two elementwise passes instead of three
    # over the largest activation of the graph. The multiply-add runs in NHWC, before the Transpose, with its
    # per-channel constants tiled along the width (shape (1, 1, W, 3)): ONNX Runtime moves the Transpose away
    # anyway to meet its NHWC int8 convolutions, and a broadcast whose innermost run is W*3 values instead of
    # 3 is about 4x faster there (the two passes took ~10 % of the int8_cpu engine's time with the (3,) form).
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    width = pre.image_size
    scale = np.tile(1.0 / (255.0 * std), (width, 1))
    bias = np.tile(-mean / std, (width, 1))
    inits = [_const(p + "scale", scale, [1, 1, width, 3]), _const(p + "bias", bias, [1, 1, width, 3])]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], [p + "float"], to=TensorProto.FLOAT, name=p + "cast"),
        helper.make_node("Mul", [p + "float", p + "scale"], [p + "scaled"], name=p + "scale"),
        helper.make_node("Add", [p + "scaled", p + "bias"], [p + "nhwc"], name=p + "shift"),
        helper.make_node("Transpose", [p + "nhwc"], [out_name], perm=[0, 3, 1, 2], name=p + "to_nchw"),
    ]
    return nodes, inits


def tail_nodes(in_name: str, eps: float = 1e-12) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """FP32 L2 normalisation ``x / max(||x||_2, eps)`` of ``in_name`` (N, D) into ``embeddings``.

    Same formula as ``torch.nn.functional.normalize``; ReduceSum with an axes input works for opset >= 13.
    """
    t = TAIL_PREFIX
    inits = [_const(t + "axes", [1], [1], np.int64), _const(t + "eps", [eps], [])]
    nodes = [
        helper.make_node("Mul", [in_name, in_name], [t + "sq"], name=t + "square"),
        helper.make_node("ReduceSum", [t + "sq", t + "axes"], [t + "sumsq"], keepdims=1, name=t + "sum"),
        helper.make_node("Sqrt", [t + "sumsq"], [t + "norm"], name=t + "sqrt"),
        helper.make_node("Max", [t + "norm", t + "eps"], [t + "clamped"], name=t + "clamp"),
        helper.make_node("Div", [in_name, t + "clamped"], [OUTPUT_NAME], name=t + "div"),
    ]
    return nodes, inits


def check_input_layout(input_layout: str) -> str:
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"input_layout must be one of {INPUT_LAYOUTS}, got {input_layout!r}")
    return input_layout


def input_value_info(input_layout: str, image_size: int) -> onnx.ValueInfoProto:
    """The graph input ``images``: uint8 ``(batch, H, W, 3)`` or float32 ``(batch, 3, H, W)``."""
    if check_input_layout(input_layout) == "float_nchw":
        return helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 3, image_size, image_size])
    return helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, image_size, image_size, 3])


def assemble_encoder(body: onnx.ModelProto, pre: Preprocess, out_dim: int, *,
                     body_dtype: int = TensorProto.FLOAT, input_layout: str = "uint8_nhwc") -> onnx.ModelProto:
    """Wrap a backbone graph (``backbone_input`` -> ``backbone_features``) into the deploy graph.

    ``body_dtype`` is the element type the body computes in; FP16 bodies get explicit Casts on both sides
    so that preprocessing (or the float input) and the L2 tail stay FP32. ``input_layout="float_nchw"``
    feeds the float32 NCHW graph input ``images`` straight into the body (no preprocessing nodes).
    """
    check_input_layout(input_layout)
    g = body.graph
    body_in, body_out = g.input[0].name, g.output[0].name
    cast_body = body_dtype != TensorProto.FLOAT
    tail_in = TAIL_PREFIX + "features_fp32" if cast_body else body_out
    if input_layout == "uint8_nhwc":
        pre_out = PREPROCESS_PREFIX + "normalised" if cast_body else body_in
        nodes, inits = preprocess_nodes(pre, pre_out)
        if cast_body:
            nodes.append(helper.make_node("Cast", [pre_out], [body_in], to=body_dtype, name=PREPROCESS_PREFIX + "cast_body"))
    else:
        nodes, inits = [], []
        if cast_body:
            nodes.append(helper.make_node("Cast", [INPUT_NAME], [body_in], to=body_dtype, name=INPUT_PREFIX + "cast_body"))
        else:  # the body reads the graph input directly
            for node in g.node:
                node.input[:] = [INPUT_NAME if n == body_in else n for n in node.input]
    for i, node in enumerate(g.node):
        # Unique, stable names: quantization excludes/includes nodes by name.
        if not node.name or node.name.startswith((PREPROCESS_PREFIX, TAIL_PREFIX, INPUT_PREFIX)):
            node.name = f"body/{i}_{node.op_type}"
        nodes.append(node)
    if cast_body:
        nodes.append(helper.make_node("Cast", [body_out], [tail_in], to=TensorProto.FLOAT, name=TAIL_PREFIX + "cast_fp32"))
    t_nodes, t_inits = tail_nodes(tail_in)
    nodes += t_nodes
    inits += t_inits
    graph = helper.make_graph(
        nodes, "edge_encoder",
        [input_value_info(input_layout, pre.image_size)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, out_dim])],
        list(g.initializer) + inits,
    )
    model = helper.make_model(graph, opset_imports=list(body.opset_import), producer_name="edge-encoder")
    model.ir_version = body.ir_version
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def region_node_names(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node names of the ``preprocess``, ``body`` and ``tail`` regions of an assembled encoder.

    ``input/*`` adapters on a float input (e.g. the FP16 cast) are listed under ``"input"``: they are
    neither preprocessing nor part of the body.
    """
    regions: dict[str, list[str]] = {"preprocess": [], "body": [], "tail": [], "input": []}
    for node in model.graph.node:
        key = ("preprocess" if node.name.startswith(PREPROCESS_PREFIX) else "tail" if node.name.startswith(TAIL_PREFIX)
               else "input" if node.name.startswith(INPUT_PREFIX) else "body")
        regions[key].append(node.name)
    return regions


def input_contract(input_layout: str, image_size: int) -> dict[str, Any]:
    """Layout facts of ``input_layout``: tensor ``layout``, ``dtype``, ``shape`` and ``normalization_in_graph``."""
    if check_input_layout(input_layout) == "float_nchw":
        return {"layout": "NCHW", "dtype": "float32", "shape": ["batch", 3, image_size, image_size],
                "normalization_in_graph": False}
    return {"layout": "NHWC", "dtype": "uint8", "shape": ["batch", image_size, image_size, 3],
            "normalization_in_graph": True}


def contract_metadata(pre: Preprocess, out_dim: int, precision: str, extra: dict[str, str] | None = None, *,
                      input_layout: str = "uint8_nhwc") -> dict[str, str]:
    """The contract as ONNX ``metadata_props`` (strings), so the model file is self-describing.

    ``input_format`` is the layout name (``uint8_nhwc``/``float_nchw``); ``normalization_in_graph`` says
    whether ``((x / 255) - mean) / std`` happens inside the graph or must be applied by the caller.
    """
    spec = input_contract(input_layout, pre.image_size)
    meta = {
        "input_name": INPUT_NAME, "input_format": input_layout, "input_layout": spec["layout"],
        "input_dtype": spec["dtype"], "input_color": "RGB",
        "normalization_in_graph": "true" if spec["normalization_in_graph"] else "false",
        "image_size": str(pre.image_size), "mean": ",".join(repr(float(v)) for v in pre.mean),
        "std": ",".join(repr(float(v)) for v in pre.std), "scale": "1/255",
        "output_name": OUTPUT_NAME, "embedding_dim": str(out_dim), "l2_normalized": "true",
        "precision": precision, "tail_precision": "fp32",
    }
    meta.update(extra or {})
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    """Replace our keys in ``model.metadata_props`` (other keys are kept)."""
    keep = [p for p in model.metadata_props if p.key not in meta and not p.key.startswith("pkg.torch")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in sorted(meta.items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """Our ``metadata_props`` without the prefix."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def _dims(vi: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in vi.type.tensor_type.shape.dim)


def verify_encoder(model: onnx.ModelProto, *, opset: int, image_size: int, out_dim: int,
                   input_layout: str = "uint8_nhwc") -> None:
    """Checks every saved variant must pass; raises ``ValueError`` naming what is wrong.

    opset as requested; input uint8 ``(batch, H, W, 3)`` (float32 ``(batch, 3, H, W)`` for
    ``input_layout="float_nchw"``), output float32 ``(batch, D)`` with every
    non-batch dim static; no external data; no training-mode BatchNormalization; ``onnx.checker``
    full check (which includes strict shape inference).
    """
    if _opset_of(model) != opset:
        raise ValueError(f"model opset is {_opset_of(model)}, requested {opset}")
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(model.graph.input)} and {len(model.graph.output)}")
    inp, out = model.graph.input[0], model.graph.output[0]
    want = input_value_info(input_layout, image_size).type.tensor_type
    want_dims = tuple(d.dim_value for d in want.shape.dim)[1:]
    if inp.type.tensor_type.elem_type != want.elem_type or _dims(inp)[1:] != want_dims:
        raise ValueError(f"input {inp.name!r} must be {TensorProto.DataType.Name(want.elem_type)} (batch, "
                         f"{', '.join(map(str, want_dims))}) for input_layout={input_layout!r}, got "
                         f"{TensorProto.DataType.Name(inp.type.tensor_type.elem_type)} {_dims(inp)}")
    if out.type.tensor_type.elem_type != TensorProto.FLOAT or _dims(out)[1:] != (out_dim,):
        raise ValueError(f"output {out.name!r} must be float32 (batch, {out_dim}), got {_dims(out)}")
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            raise ValueError(f"initializer {tensor.name!r} uses external data; the model must be one file")
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            raise ValueError(f"node {node.name!r} is a training-mode BatchNormalization")
    onnx.checker.check_model(model, full_check=True)


def save_model(model: onnx.ModelProto, path: Path | str) -> str:
    """Serialize ``model`` as one self-contained file (atomically); returns its SHA-256."""
    path = Path(path)
    data = model.SerializeToString()
    if len(data) >= 2 ** 31 - 1:
        raise ValueError(f"model is {len(data)} bytes; single-file ONNX is limited to 2 GB")
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def build_fp32_encoder(backbone: nn.Module, preprocess: dict[str, Any] | Preprocess, *, opset: int = DEFAULT_OPSET,
                       exporter: str = "auto", input_layout: str = "uint8_nhwc") -> tuple[onnx.ModelProto, str, list[str]]:
    """The verified FP32 deploy graph in memory: ``(model, exporter_used, notes)``."""
    check_input_layout(input_layout)
    pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
    body, used, notes = export_backbone_graph(backbone, pre.image_size, opset=opset, exporter=exporter)
    out_dim = _body_out_dim(body, backbone, pre.image_size)
    model = assemble_encoder(body, pre, out_dim, input_layout=input_layout)
    set_metadata(model, contract_metadata(pre, out_dim, "fp32", {"exporter": used, "opset": str(opset)},
                                          input_layout=input_layout))
    verify_encoder(model, opset=opset, image_size=pre.image_size, out_dim=out_dim, input_layout=input_layout)
    return model, used, notes


def _body_out_dim(body: onnx.ModelProto, backbone: nn.Module, image_size: int) -> int:
    dims = _dims(body.graph.output[0])
    if len(dims) == 2 and isinstance(dims[1], int) and dims[1] > 0:
        return dims[1]
    # TorchScript may leave the feature dim symbolic; ask the module itself.
    with torch.no_grad():
        return int(backbone.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1])
