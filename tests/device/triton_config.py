"""Checking a bundle's Triton model repository against Triton itself, without Triton: every ``config.pbtxt`` is parsed
into Triton's ``inference.ModelConfig`` (``model_config.proto``, compiled, as shipped in the ``tritonclient`` wheel:
``tritonclient/grpc/model_config_pb2.py``) with ``google.protobuf.text_format.Parse``, which refuses an unknown field
or enum value, and then held to the rules Triton applies when it loads a model:

- the ``name`` matches the model's folder ("If *name* is specified it must match the name of the model repository
  directory containing the model", server docs/user_guide/model_configuration.md, "Name, Platform and Backend");
- the platform is ``onnxruntime_onnx`` / ``tensorrt_plan`` and the version folder ``1`` holds the platform's default
  file, ``model.onnx`` / ``model.plan`` (triton-inference-server/core src/constants.h);
- ``max_batch_size`` >= 0; > 0: ``dims`` exclude the batch ("the full shape is formed as [ -1 ] + dims"); 0: the
  ``dims`` are the full shape (model_configuration.md, "Maximum Batch Size", "Inputs and Outputs"); shapes have rank
  >= 1 and every dim is >= 1 or -1;
- ``format: FORMAT_NHWC`` / ``FORMAT_NCHW`` only with exactly 3 dims (model_config.proto ModelInput.Format; core
  src/model_config_utils.cc ValidateModelInput, "model input NHWC/NCHW require 3 dims");
- dynamic batching only for a batching model (preferred sizes <= max_batch_size: ValidateModelConfig);
- secondary devices only on TensorRT models, at most one, ``KIND_NVDLA`` (tensorrt_backend
  src/tensorrt_model_instance.cc), and here only on the fixed-batch DLA model;
- input / output names and data types are the manifest's contract and, for an ONNX model, its graph's (ONNX
  ``UINT8`` / ``FLOAT`` are Triton's ``TYPE_UINT8`` / ``TYPE_FP32``, model_configuration.md "Datatypes"), and a
  batching ONNX model's first graph dimension is dynamic.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import pytest

PLATFORM_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
MANIFEST_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}


@functools.lru_cache(maxsize=1)
def model_config_pb2() -> Any:
    """Triton's compiled ``model_config.proto`` from the installed ``tritonclient`` (the ``test`` extra), loaded from
    its file so that ``tritonclient.grpc``'s package (which needs grpcio) is not imported."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("tritonclient is not installed: pip install -e '.[test]' (it carries Triton's model_config.proto)")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    with warnings.catch_warnings():  # protobuf warns when the runtime is one major newer than the generating protoc
        warnings.simplefilter("ignore")
        module_spec.loader.exec_module(module)
    return module


def parse_config(text: str) -> Any:
    """``config.pbtxt`` text as ``inference.ModelConfig``; ``text_format.ParseError`` on any unknown field."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2().ModelConfig())


def config_problems(cfg: Any, folder_name: str, manifest: dict[str, Any]) -> list[str]:
    """Every rule of the module docstring this config breaks (empty: it loads as far as the config goes)."""
    pb2 = model_config_pb2()
    problems = []
    if cfg.name != folder_name:
        problems.append(f"name {cfg.name!r} is not the folder's {folder_name!r}")
    if cfg.platform not in PLATFORM_FILES or cfg.backend:
        problems.append(f"platform {cfg.platform!r} / backend {cfg.backend!r}: expected one of {list(PLATFORM_FILES)}")
    mbs = cfg.max_batch_size
    if mbs < 0:
        problems.append(f"max_batch_size {mbs} < 0")
    if len(cfg.input) != 1 or len(cfg.output) != 1:
        return problems + [f"{len(cfg.input)} inputs / {len(cfg.output)} outputs, expected 1 / 1"]
    inp, out = cfg.input[0], cfg.output[0]
    contract_in, contract_out = manifest["input"], manifest["output"]
    dtype = pb2.DataType.Name
    if (inp.name, dtype(inp.data_type)) != (contract_in["name"], MANIFEST_DTYPES[contract_in["dtype"]]):
        problems.append(f"input {inp.name!r} {dtype(inp.data_type)} is not the contract's {contract_in['name']!r} "
                        f"{contract_in['dtype']}")
    if (out.name, dtype(out.data_type)) != (contract_out["name"], "TYPE_FP32"):
        problems.append(f"output {out.name!r} {dtype(out.data_type)} is not {contract_out['name']!r} float32")
    for what, dims in (("input", list(inp.dims)), ("output", list(out.dims))):
        if not dims or any(d < 1 and d != -1 for d in dims):
            problems.append(f"{what} dims {dims}: rank >= 1, each dim >= 1 or -1")
    in_rest, d = [int(x) for x in contract_in["shape"][1:]], int(contract_out["embedding_dim"])
    if mbs > 0:
        if list(inp.dims) != in_rest or list(out.dims) != [d]:
            problems.append(f"max_batch_size {mbs}: dims {list(inp.dims)} / {list(out.dims)} must exclude the batch "
                            f"({in_rest} / {[d]})")
    elif mbs == 0:
        batch = list(inp.dims)[:1]
        if not batch or batch[0] < 1 or list(inp.dims) != batch + in_rest or list(out.dims) != batch + [d]:
            problems.append(f"max_batch_size 0: dims {list(inp.dims)} / {list(out.dims)} must be the full shapes, "
                            f"one batch B first (B + {in_rest} / B + {[d]})")
    fmt = pb2.ModelInput.Format.Name(inp.format)
    if fmt != "FORMAT_NONE" and (len(inp.dims) != 3 or fmt != f"FORMAT_{contract_in['layout']}"):
        problems.append(f"{fmt} with dims {list(inp.dims)}: a format needs exactly 3 dims and the contract's layout "
                        f"{contract_in['layout']}")
    if cfg.HasField("dynamic_batching"):
        if mbs < 1:
            problems.append("dynamic_batching on a model with max_batch_size 0")
        if any(not 0 < size <= mbs for size in cfg.dynamic_batching.preferred_batch_size):
            problems.append(f"preferred_batch_size {list(cfg.dynamic_batching.preferred_batch_size)} outside 1..{mbs}")
    for group in cfg.instance_group:
        devices = list(group.secondary_devices)
        if not devices:
            continue
        kinds = [pb2.ModelInstanceGroup.SecondaryDevice.SecondaryDeviceKind.Name(s.kind) for s in devices]
        if cfg.platform != "tensorrt_plan" or kinds != ["KIND_NVDLA"] or devices[0].device_id < 0:
            problems.append(f"secondary devices {kinds} on {cfg.platform}: one KIND_NVDLA on a tensorrt_plan model")
        if pb2.ModelInstanceGroup.Kind.Name(group.kind) != "KIND_GPU" or mbs != 0:
            problems.append("a DLA instance is a KIND_GPU group of a fixed-batch (max_batch_size 0) model")
    return problems


def dla_cores(cfg: Any) -> list[int]:
    return [s.device_id for g in cfg.instance_group for s in g.secondary_devices]


def check_onnx_graph(cfg: Any, onnx_path: Path) -> None:
    """The config's input / output are the ONNX graph's: names, data types, dims (a dynamic first dim if batching)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    graph_in = [v for v in graph.input if v.name not in initializers]
    types = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}
    pb2 = model_config_pb2()
    for (tensors, values) in ((cfg.input, graph_in), (cfg.output, list(graph.output))):
        assert [t.name for t in tensors] == [v.name for v in values], (onnx_path, [v.name for v in values])
        for tensor, value in zip(tensors, values):
            ttype = value.type.tensor_type
            assert pb2.DataType.Name(tensor.data_type) == types[ttype.elem_type], (tensor.name, ttype.elem_type)
            dims = list(ttype.shape.dim)
            fixed = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
            if cfg.max_batch_size > 0:
                assert fixed[0] == -1, f"{tensor.name}: a batching model needs a dynamic first dim, graph has {fixed}"
                assert fixed[1:] == list(tensor.dims), (tensor.name, fixed, list(tensor.dims))
            else:
                assert all(g in (-1, c) for g, c in zip(fixed, tensor.dims)) and len(fixed) == len(tensor.dims)


def check_model_folder(folder: Path, manifest: dict[str, Any], *, model_source: Path | None = None) -> Any:
    """One model folder: exactly ``config.pbtxt`` and ``1/<default model file>`` (the bytes of ``model_source`` when
    given), a config Triton parses and accepts, and, for ONNX, the graph's inputs and outputs. Returns the config."""
    cfg = parse_config((folder / "config.pbtxt").read_text())
    problems = config_problems(cfg, folder.name, manifest)
    assert not problems, f"{folder}: {problems}"
    model_file = folder / "1" / PLATFORM_FILES[cfg.platform]
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"], sorted(folder.iterdir())
    assert [p.name for p in (folder / "1").iterdir()] == [model_file.name] and model_file.stat().st_size > 0
    if model_source is not None:
        assert model_file.read_bytes() == Path(model_source).read_bytes()
    if cfg.platform == "onnxruntime_onnx":
        check_onnx_graph(cfg, model_file)
    return cfg


def check_repository(triton: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every entry of ``triton/`` is a complete model folder (Triton loads each subdirectory as a model):
    ``{model name: config}``."""
    entries = sorted(triton.iterdir())
    assert all(p.is_dir() for p in entries), [p.name for p in entries if not p.is_dir()]
    return {p.name: check_model_folder(p, manifest) for p in entries}
