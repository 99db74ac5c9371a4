"""Triton model repository of a deploy bundle (``<bundle>/triton/``): ``config.pbtxt`` rendering and model folders.
Standard library only, so the export (ONNX Runtime models) and ``edge-encoder build`` on the device (TensorRT models)
write the same configs, and the tests check them without TensorRT or Triton.

    triton/encoder_onnx_<variant>/      config.pbtxt + 1/model.onnx   written by the export, every variant
    triton/encoder_trt_<variant>/       config.pbtxt + 1/model.plan   written by ``edge-encoder build`` (GPU plan)
    triton/encoder_trt_<variant>_dla/   config.pbtxt + 1/model.plan   written by ``edge-encoder build --dla-core N``

Why no model folder exists before its model file does: Triton takes every subdirectory of the repository as a model
("Each subdirectory of repository path is a model directory", triton-inference-server/core
src/model_repository_manager/model_repository_manager.cc; ``GetDirectorySubdirs`` skips only ``.`` and ``..``, so
hidden folders count too: core src/filesystem/implementations/local.h), marks a model it cannot load UNAVAILABLE (server
docs/user_guide/model_management.md, "Model Control Mode NONE") and ``tritonserver --exit-on-error`` exits "if an
error occurs during initialization" (server src/command_line_parser.cc; on by default, as PyTriton's TritonConfig
``exit_on_error=True`` mirrors). So a model folder is built in a
temporary folder *beside* ``triton/`` (never inside it) and renamed into place whole.

The rules the configs follow (checked against Triton's ``model_config.proto`` in tests/device/test_triton_repository.py):

- platform ``onnxruntime_onnx`` / ``tensorrt_plan``, default model files ``model.onnx`` / ``model.plan``
  (triton-inference-server/core src/constants.h: kOnnxRuntimeOnnxPlatform, kTensorRTPlanPlatform, ...Filename).
- Batching models: ``max_batch_size`` >= 1 and ``dims`` without the batch ("the full shape is formed as [ -1 ] +
  dims"); a fixed-batch (DLA) plan: ``max_batch_size: 0`` and the batch in ``dims`` ("For models that do not support
  batching ... max_batch_size must be set to zero"; "the full shape is formed as dims"): server
  docs/user_guide/model_configuration.md, "Maximum Batch Size" and "Inputs and Outputs".
- ``format: FORMAT_NHWC`` / ``FORMAT_NCHW`` only on an input of exactly 3 dims ("the 'dims' below should only specify
  the 3 non-batch dimensions", common protobuf/model_config.proto, ModelInput.Format; core
  src/model_config_utils.cc ValidateModelInput: "model input NHWC/NCHW require 3 dims"), so never on the DLA model.
- DLA: ``instance_group { kind: KIND_GPU secondary_devices { kind: KIND_NVDLA device_id: <core> } }``
  (model_config.proto ModelInstanceGroup.SecondaryDevice: "Currently KIND_NVDLA is only supported by the TensorRT
  backend"); the TensorRT backend takes exactly one secondary device, of kind KIND_NVDLA, and uses its ``device_id``
  as the DLA core (triton-inference-server/tensorrt_backend src/tensorrt_model_instance.cc at f172a95: ``dla_core_id_ =
  secondary_device_id``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_encoder.core.files import make_temp_dir, pid_alive
from edge_encoder.device.trt_plans import DEFAULT_PROFILE, DLA_VARIANTS, TENSORRT_VARIANTS

ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
MODEL_FILENAMES = {ONNX_PLATFORM: "model.onnx", TENSORRT_PLATFORM: "model.plan"}  # Triton's default_model_filename
MODEL_VERSION = "1"
CONFIG_NAME = "config.pbtxt"
DATA_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}  # manifest dtype -> model_config.proto DataType
DYNAMIC_BATCHING_DELAY_US = 500


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the config states it: name, manifest dtype, dims without the batch, and the
    image format (``NHWC`` / ``NCHW``) of an image input, else None."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    format: str | None = None


def onnx_model_name(variant: str) -> str:
    return f"encoder_onnx_{variant}"


def tensorrt_model_name(variant: str, dla: bool = False) -> str:
    return f"encoder_trt_{variant}" + ("_dla" if dla else "")


def contract_tensors(manifest: Mapping[str, Any]) -> tuple[TensorSpec, TensorSpec]:
    """``(input, output)`` of every variant, from the manifest's contract (``input``, ``output``); a one-line
    ``ValueError`` naming the key when the manifest lacks it."""
    try:
        inp, out = manifest["input"], manifest["output"]
        in_dims = tuple(int(d) for d in inp["shape"][1:])
        spec_in = TensorSpec(str(inp["name"]), str(inp["dtype"]), in_dims, inp.get("layout"))
        spec_out = TensorSpec(str(out["name"]), str(out.get("dtype", "float32")), (int(out["embedding_dim"]),))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"manifest.json: cannot read the input/output contract for Triton ({exc!r}); expected "
                         "input.{name, dtype, shape, layout} and output.{name, embedding_dim}") from None
    for spec in (spec_in, spec_out):
        if spec.dtype not in DATA_TYPES:
            raise ValueError(f"manifest.json: tensor {spec.name!r} has dtype {spec.dtype!r}; Triton configs are "
                             f"written for {', '.join(DATA_TYPES)}")
    return spec_in, spec_out


def profile_max(manifest: Mapping[str, Any]) -> int:
    """The TensorRT profile's max batch: every batching model's ``max_batch_size``."""
    return int((manifest.get("tensorrt_profile") or DEFAULT_PROFILE)["max"])


def render_config(name: str, platform: str, inp: TensorSpec, out: TensorSpec, *, max_batch_size: int,
                  static_batch: int = 0, dla_core: int | None = None) -> str:
    """``config.pbtxt`` text (protobuf text format of ``inference.ModelConfig``).

    ``static_batch`` 0: a batching model (``max_batch_size`` >= 1, dims without the batch, the input's image format,
    dynamic batching). ``static_batch`` B > 0: a fixed-batch plan (``max_batch_size: 0``, B leads ``dims``, no
    format, no dynamic batcher). ``dla_core``: a TensorRT DLA plan (needs ``static_batch``), run with that DLA core.
    """
    if platform not in MODEL_FILENAMES:
        raise ValueError(f"platform must be one of {', '.join(MODEL_FILENAMES)}, got {platform!r}")
    if static_batch < 0 or (not static_batch and max_batch_size < 1):
        raise ValueError(f"{name}: a batching model needs max_batch_size >= 1 (got {max_batch_size}); a fixed-batch "
                         f"model static_batch >= 1 (got {static_batch})")
    if dla_core is not None and (platform != TENSORRT_PLATFORM or not static_batch or dla_core < 0):
        raise ValueError(f"{name}: a DLA model is a TensorRT plan with one static batch and a DLA core >= 0")
    lead = (static_batch,) if static_batch else ()

    def tensor(spec: TensorSpec, image: bool) -> str:
        dims = lead + spec.dims
        fmt = f"    format: FORMAT_{spec.format}\n" if image and spec.format and len(dims) == 3 else ""
        return (f'  {{\n    name: "{spec.name}"\n    data_type: {DATA_TYPES[spec.dtype]}\n{fmt}'
                f'    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}\n')

    text = (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {0 if static_batch else max_batch_size}\n'
            f'input [\n{tensor(inp, True)}]\noutput [\n{tensor(out, False)}]\n')
    if dla_core is not None:
        return text + ('instance_group [\n  {\n    kind: KIND_GPU\n    secondary_devices [\n      {\n'
                       f'        kind: KIND_NVDLA\n        device_id: {int(dla_core)}\n      }}\n    ]\n  }}\n]\n')
    if static_batch:
        return text
    return text + f"dynamic_batching {{\n  max_queue_delay_microseconds: {DYNAMIC_BATCHING_DELAY_US}\n}}\n"


def onnx_model_config(manifest: Mapping[str, Any], variant: str) -> tuple[str, str]:
    """``(model name, config.pbtxt)`` of the ONNX Runtime model of ``variant`` (any variant: int8_cpu is ONNX
    Runtime's CPU graph; int8_trt runs too, slowly on a CPU, its Q/DQ layout being TensorRT's)."""
    name = onnx_model_name(variant)
    inp, out = contract_tensors(manifest)
    return name, render_config(name, ONNX_PLATFORM, inp, out, max_batch_size=profile_max(manifest))


def tensorrt_model_config(manifest: Mapping[str, Any], variant: str, *, max_batch_size: int | None = None,
                          dla_core: int | None = None, dla_batch: int | None = None) -> tuple[str, str]:
    """``(model name, config.pbtxt)`` of a TensorRT plan of ``variant``: the GPU plan (``max_batch_size``: its
    profile's max, default the manifest's) or, with ``dla_core``, the DLA plan of static batch ``dla_batch``."""
    if variant not in TENSORRT_VARIANTS:
        raise ValueError(f"variant {variant!r} has no TensorRT plan (TensorRT variants: {', '.join(TENSORRT_VARIANTS)})")
    inp, out = contract_tensors(manifest)
    if dla_core is None:
        name = tensorrt_model_name(variant)
        return name, render_config(name, TENSORRT_PLATFORM, inp, out,
                                   max_batch_size=max_batch_size or profile_max(manifest))
    if variant not in DLA_VARIANTS or not dla_batch:
        raise ValueError(f"variant {variant!r} on DLA: the DLA runs {', '.join(DLA_VARIANTS)} at one static batch")
    name = tensorrt_model_name(variant, dla=True)
    return name, render_config(name, TENSORRT_PLATFORM, inp, out, max_batch_size=0, static_batch=int(dla_batch),
                               dla_core=int(dla_core))


# ------------------------------------------------------------------------------------------------ model folders


def write_model(repository: Path | str, name: str, config: str, model_file: Path | str, platform: str) -> Path:
    """Put model ``name`` (``config.pbtxt`` + ``1/<model.onnx|model.plan>``, the latter a hard link to
    ``model_file``, or a copy across file systems) into ``repository`` whole: built in a temporary folder beside the
    repository, then renamed in; an existing model folder is renamed away first and deleted last. Triton never sees
    a model folder without its model file. Returns the model folder."""
    repository, model_file = Path(repository), Path(model_file)
    if not model_file.is_file():
        raise ValueError(f"Triton model {name}: {model_file} does not exist")
    repository.mkdir(parents=True, exist_ok=True)
    parent, prefix = repository.parent, f".{repository.name}-{name}."
    _remove_stale(parent, prefix)
    tmp = make_temp_dir(f"{prefix}tmp-{os.getpid()}-", parent)  # the ordinary mode: Triton's user reads it
    try:
        (tmp / MODEL_VERSION).mkdir()
        _write_synced(tmp / CONFIG_NAME, config.encode())
        target = tmp / MODEL_VERSION / MODEL_FILENAMES[platform]
        try:  # a hard link costs no space (a plan is tens of MB on a Jetson); a rebuild replaces the plan's inode
            os.link(model_file, target)
        except OSError:
            shutil.copyfile(model_file, target)
            with open(target, "rb+") as f:
                os.fsync(f.fileno())
        _swap_in(tmp, repository / name, parent, prefix)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repository / name


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _swap_in(tmp: Path, target: Path, parent: Path, prefix: str) -> None:
    """``tmp`` becomes ``target``: one rename when there is none; else the old folder goes aside first (the model is
    missing between the two renames, never half there) and is deleted after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{prefix}old-{os.getpid()}-", dir=parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale(parent: Path, prefix: str) -> None:
    """Delete what a killed earlier write left beside the repository (its process is gone)."""
    for path in parent.glob(f"{prefix}*-*-*"):
        pid = path.name[len(prefix):].split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)




def write_onnx_models(bundle: Path | str, manifest: Mapping[str, Any]) -> list[Path]:
    """The export's models: ``triton/encoder_onnx_<v>`` for every variant of the manifest, ready to serve."""
    bundle = Path(bundle)
    written = []
    for variant, entry in manifest["variants"].items():
        name, config = onnx_model_config(manifest, variant)
        written.append(write_model(bundle / "triton", name, config, bundle / entry["file"], ONNX_PLATFORM))
    return written


def write_tensorrt_model(bundle: Path | str, manifest: Mapping[str, Any], variant: str, plan: Path | str, *,
                         max_batch_size: int | None = None, dla_core: int | None = None,
                         dla_batch: int | None = None) -> Path | None:
    """``triton/encoder_trt_<v>[_dla]`` for a plan ``edge-encoder build`` made; None (nothing written) when the
    bundle has no ``triton/`` folder."""
    bundle = Path(bundle)
    if not (bundle / "triton").is_dir():
        return None
    name, config = tensorrt_model_config(manifest, variant, max_batch_size=max_batch_size, dla_core=dla_core,
                                         dla_batch=dla_batch)
    return write_model(bundle / "triton", name, config, plan, TENSORRT_PLATFORM)
