"""TensorRT plans: engine keys, plan selection (DLA: static batch, fp16 / int8_trt only), build modes, rebuild
messages, trtexec.txt and the Triton DLA models. Everything but the last tests runs without TensorRT: the decisions
are pure functions and the builder CLI refuses bad requests before it imports tensorrt."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.export.bundle import BundleImages, _config_pbtxt, export_bundle, trtexec_commands
from edge_encoder.export.config import ExportConfig
from edge_encoder.device.parity import DEFAULT_THRESHOLDS
from edge_encoder.device.tensorrt import (
    EngineKey,
    EngineKeyMismatch,
    check_engine_key,
    rebuild_command,
)
from edge_encoder.device.trt_plans import (
    DLA_MAX_BATCH,
    batch_chunks,
    build_mode,
    dla_profile,
    load_failure,
    parse_plan_name,
    plan_relpath,
    select_plans,
)

from edge_encoder.cli import main as cli_main

from tests.export.conftest import BACKBONE_CONFIG, IMAGE_SIZE, PREPROCESS, make_backbone
from tests.export.tiny_bundle import synthetic_images

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
PLAN = Path("runs/demo/deploy/tensorrt/encoder_int8_trt.plan")
HERE = EngineKey(tensorrt="10.3.0", gpu_name="Orin", compute_capability="8.7")
DLA_BATCH = 8
SHAPE = f"{IMAGE_SIZE}x{IMAGE_SIZE}x3"


@pytest.fixture(scope="module")
def dla_bundle(tmp_path_factory) -> Path:
    """A real bundle (fp32, fp16, int8_trt) exported with export.dla_batch = 8."""
    calib, _ = synthetic_images(64, seed=1)
    images, labels = synthetic_images(64, seed=2)
    relaxed = {v: dataclasses.replace(DEFAULT_THRESHOLDS[v], min_top1_agreement=0.4, min_top10_overlap=0.6)
               for v in ("int8_trt",)}
    out = tmp_path_factory.mktemp("dla") / "deploy"
    config = ExportConfig(variants=("fp32", "fp16", "int8_trt"), exporter="torchscript", thresholds=relaxed,
                          allow_failed=True, dla_batch=DLA_BATCH)
    export_bundle((make_backbone(), PREPROCESS, BACKBONE_CONFIG), out, BundleImages(calib, images, labels), config)
    return out


def _manifest(dla_batch: int = 0) -> dict:
    sha = "0" * 64
    return {"variants": {v: {"file": f"encoder_{v}.onnx", "sha256": sha} for v in ("fp32", "fp16", "int8_trt", "int8_cpu")},
            "tensorrt_profile": {"min": 1, "opt": 32, "max": 64}, "dla_batch": dla_batch}


# ------------------------------------------------------------------------------------------------ engine keys


def test_matching_key_is_accepted() -> None:
    check_engine_key({"tensorrt": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}, HERE, PLAN)


@pytest.mark.parametrize("field, value", [("tensorrt", "10.7.0"), ("gpu_name", "NVIDIA H100"), ("compute_capability", "9.0")])
def test_mismatching_key_is_refused_with_rebuild_command(field, value) -> None:
    stored = {"tensorrt": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", field: value}
    with pytest.raises(EngineKeyMismatch) as err:
        check_engine_key(stored, HERE, PLAN)
    message = str(err.value)
    assert field in message and value in message
    assert "edge-encoder build runs/demo/deploy --variant int8_trt" in message
    assert "trtexec" in message and "\n" not in message


def test_rebuild_command_and_plan_names() -> None:
    assert rebuild_command(PLAN) == "edge-encoder build runs/demo/deploy --variant int8_trt"
    dla = Path("runs/demo/deploy") / plan_relpath("fp16", 1, 4)
    assert dla.name == "encoder_fp16.dla1.b4.plan" and parse_plan_name(dla) == ("fp16", 1, 4)
    assert parse_plan_name(PLAN) == ("int8_trt", None, None)
    assert rebuild_command(dla) == "edge-encoder build runs/demo/deploy --variant fp16 --dla-core 1 --dla-batch 4"


def test_mismatch_and_load_failure_name_both_rebuild_commands(dla_bundle) -> None:
    plan = dla_bundle / plan_relpath("fp16", 0, DLA_BATCH)
    line = next(x for x in (dla_bundle / "trtexec.txt").read_text().splitlines()
                if x.startswith("trtexec ") and f"--saveEngine={plan_relpath('fp16', 0, DLA_BATCH)}" in x)
    with pytest.raises(EngineKeyMismatch) as err:
        check_engine_key({"tensorrt": "10.7.0", "gpu_name": "Orin", "compute_capability": "8.7"}, HERE, plan)
    for message in (str(err.value), str(load_failure(plan, has_key=False)), str(load_failure(plan, has_key=True))):
        assert f"--variant fp16 --dla-core 0 --dla-batch {DLA_BATCH}" in message and line in message
    keyless = str(load_failure(plan, has_key=False, detail="Version tag does not match"))
    assert "no engine key" in keyless and "another TensorRT version" in keyless and "Version tag" in keyless
    assert "no engine key" not in str(load_failure(plan, has_key=True))


# --------------------------------------------------------------------------------------------- plan selection


def test_int8_cpu_is_refused_by_name_for_tensorrt() -> None:
    with pytest.raises(ValueError, match="'int8_cpu' is not built with TensorRT"):
        select_plans(_manifest(), ["fp16", "int8_cpu"])


def test_gpu_plans_use_the_dynamic_profile() -> None:
    specs, notes = select_plans(_manifest(), None)
    assert [s.variant for s in specs] == ["fp32", "fp16", "int8_trt"] and not notes  # never int8_cpu
    assert all(s.profile == {"min": 1, "opt": 32, "max": 64} and s.dla_core is None for s in specs)
    assert specs[0].plan == "tensorrt/encoder_fp32.plan" and specs[0].onnx_file == "encoder_fp32.onnx"


def test_dla_builds_fp16_and_int8_trt_at_one_static_batch() -> None:
    specs, notes = select_plans(_manifest(dla_batch=8), None, dla_core=0)
    assert [s.variant for s in specs] == ["fp16", "int8_trt"]
    assert all(s.profile == dla_profile(8) == {"min": 8, "opt": 8, "max": 8} and s.dla_batch == 8 for s in specs)
    assert [s.plan for s in specs] == ["tensorrt/encoder_fp16.dla0.b8.plan", "tensorrt/encoder_int8_trt.dla0.b8.plan"]
    assert len(notes) == 1 and "skipped fp32" in notes[0] and "DLA has no FP32" in notes[0]
    # --dla-batch overrides the manifest's
    specs, _ = select_plans(_manifest(dla_batch=8), ["int8_trt"], dla_core=1, dla_batch=2)
    assert [(s.plan, s.profile["max"]) for s in specs] == [("tensorrt/encoder_int8_trt.dla1.b2.plan", 2)]


@pytest.mark.parametrize("variants, kwargs, match", [
    (["fp32"], {"dla_core": 0}, "DLA has no FP32 .*use --variant fp16 or --variant int8_trt"),
    (["fp16", "fp32"], {"dla_core": 0}, "DLA has no FP32"),
    (["int8_cpu"], {"dla_core": 0}, "not built with TensorRT"),
    (None, {"dla_core": 0}, "needs a static batch: pass --dla-batch"),
    (None, {"dla_core": 0, "dla_batch": 0}, "from 1 to 4096"),
    (None, {"dla_core": 0, "dla_batch": DLA_MAX_BATCH + 1}, "from 1 to 4096"),
    (None, {"dla_batch": 8}, "--dla-batch needs --dla-core"),
    (None, {"dla_core": -1, "dla_batch": 8}, "--dla-core must be"),
    (["fp64"], {}, "'fp64' is not in manifest.json"),
])
def test_bad_requests_are_refused_in_one_line(variants, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        select_plans(_manifest(), variants, **kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ build mode, batches


def test_build_modes() -> None:
    assert build_mode("10.3.0", "fp32", dla=False) == build_mode("11.4.0", "fp16", dla=False)
    assert build_mode("10.3.0", "int8_trt", dla=False).strongly_typed
    fp16, int8 = build_mode("10.3.0", "fp16", dla=True), build_mode("10.3.0", "int8_trt", dla=True)
    assert not fp16.strongly_typed and "GPU_FALLBACK" in fp16.flags and "FP16" in fp16.flags and "INT8" not in fp16.flags
    assert not int8.strongly_typed and {"INT8", "FP16", "GPU_FALLBACK"} <= set(int8.flags)
    trt11 = build_mode("11.4.1", "int8_trt", dla=True)
    assert trt11.strongly_typed and trt11.flags == ("GPU_FALLBACK",)  # no precision flags exist in TensorRT 11


def test_batch_chunks() -> None:
    assert batch_chunks(130, 1, 64) == [(0, 64, 64), (64, 128, 64), (128, 130, 2)]
    assert batch_chunks(20, 8, 8) == [(0, 8, 8), (8, 16, 8), (16, 20, 8)]  # static DLA plan: last chunk padded
    assert batch_chunks(3, 8, 8) == [(0, 3, 8)] and batch_chunks(0, 1, 64) == []
    with pytest.raises(ValueError, match="min <= max"):
        batch_chunks(4, 8, 4)


# ------------------------------------------------------------------------------------------------ builder CLI


def test_cli_refuses_fp32_on_dla_in_one_line(dla_bundle, capsys) -> None:
    assert cli_main(["build", str(dla_bundle), "--dla-core", "0", "--variant", "fp32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DLA has no FP32" in err[0] and "--variant fp16 or --variant int8_trt" in err[0]


def test_cli_refuses_dla_without_a_static_batch(dla_bundle, tmp_path, capsys) -> None:
    assert cli_main(["build", str(dla_bundle), "--dla-batch", "4"]) == 2
    assert "--dla-batch needs --dla-core" in capsys.readouterr().err
    manifest = json.loads((dla_bundle / "manifest.json").read_text())
    assert manifest["dla_batch"] == DLA_BATCH
    bundle = tmp_path / "deploy"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(manifest | {"dla_batch": 0}))
    assert cli_main(["build", str(bundle), "--dla-core", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a static batch" in err[0]


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_cli_implicit_variants_skip_fp32_then_needs_tensorrt(dla_bundle, capsys) -> None:
    assert cli_main(["build", str(dla_bundle), "--dla-core", "0"]) == 2
    err = capsys.readouterr().err
    assert "note: skipped fp32 for DLA: DLA has no FP32" in err and "building fp16, int8_trt" in err
    assert "tensorrt is not installed" in err


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_cli_without_tensorrt_exits_2(dla_bundle, capsys) -> None:
    assert cli_main(["build", str(dla_bundle)]) == 2
    assert "tensorrt is not installed" in capsys.readouterr().err
    assert cli_main(["key", str(dla_bundle / "tensorrt" / "encoder_fp32.plan"), "--onnx", "encoder_fp32.onnx"]) == 2
    assert "tensorrt is not installed" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- trtexec.txt and Triton


def _flags(line: str) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "") for arg in shlex.split(line)[1:])


def test_trtexec_lines(dla_bundle) -> None:
    lines = (dla_bundle / "trtexec.txt").read_text().splitlines()
    builds = [(i, _flags(x)) for i, x in enumerate(lines) if x.startswith("trtexec ")]
    gpu = [f for _, f in builds if "useDLACore" not in f]
    dla = [f for _, f in builds if "useDLACore" in f]
    assert [f["onnx"] for f in gpu] == ["encoder_fp32.onnx", "encoder_fp16.onnx", "encoder_int8_trt.onnx"]
    for f in gpu:  # GPU: strongly typed, dynamic profile 1/32/64
        assert "stronglyTyped" in f and (f["minShapes"], f["optShapes"], f["maxShapes"]) == (
            f"images:1x{SHAPE}", f"images:32x{SHAPE}", f"images:64x{SHAPE}")
    assert [f["onnx"] for f in dla] == ["encoder_fp16.onnx", "encoder_int8_trt.onnx"]  # no fp32 on DLA
    for f in dla:  # DLA: one static shape everywhere, core 0, GPU fallback
        assert {f[k] for k in ("minShapes", "optShapes", "maxShapes", "shapes")} == {f"images:{DLA_BATCH}x{SHAPE}"}
        assert f["useDLACore"] == "0" and "allowGPUFallback" in f and "stronglyTyped" not in f
        variant = f["onnx"][len("encoder_"):-len(".onnx")]
        assert f["saveEngine"] == plan_relpath(variant, 0, DLA_BATCH) and ("int8" in f) == (variant == "int8_trt")
    for i, f in builds:  # each build is followed by its key step
        key = shlex.split(lines[i + 1])
        assert key[:2] == ["edge-encoder", "key"]
        assert key[2] == f["saveEngine"] and key[3:5] == ["--onnx", f["onnx"]]
        assert ("--dla-core" in key) == ("useDLACore" in f)


def test_trtexec_dla_lines_are_static_examples_without_a_dla_batch() -> None:
    lines = trtexec_commands(["fp32", "fp16", "int8_trt"], IMAGE_SIZE).splitlines()
    assert not [x for x in lines if x.startswith("trtexec ") and "useDLACore" in x]
    examples = [_flags(x[2:]) for x in lines if x.startswith("# trtexec ")]
    assert [f["onnx"] for f in examples] == ["encoder_fp16.onnx", "encoder_int8_trt.onnx"]
    for f in examples:
        assert {f[k] for k in ("minShapes", "optShapes", "maxShapes", "shapes")} == {f"images:1x{SHAPE}"}
        assert f["saveEngine"].endswith(".dla0.b1.plan")


def test_triton_dla_models_and_manifest(dla_bundle) -> None:
    assert json.loads((dla_bundle / "manifest.json").read_text())["dla_batch"] == DLA_BATCH
    assert not (dla_bundle / "triton" / "encoder_trt_fp32_dla").exists()
    for variant in ("fp16", "int8_trt"):
        cfg = (dla_bundle / "triton" / f"encoder_trt_{variant}_dla" / "config.pbtxt").read_text()
        assert f'name: "encoder_trt_{variant}_dla"' in cfg and 'platform: "tensorrt_plan"' in cfg
        assert "max_batch_size: 0" in cfg and "dynamic_batching" not in cfg and "kind: KIND_NVDLA" in cfg
        dims = re.findall(r"dims: \[ ([^\]]+) \]", cfg)
        assert dims == [f"{DLA_BATCH}, {IMAGE_SIZE}, {IMAGE_SIZE}, 3", f"{DLA_BATCH}, 64"]
        gpu = (dla_bundle / "triton" / f"encoder_trt_{variant}" / "config.pbtxt").read_text()
        assert "max_batch_size: 64" in gpu and "dynamic_batching" in gpu
    readme = (dla_bundle / "README.md").read_text()
    assert f"encoder_<variant>.dla0.b{DLA_BATCH}.plan" in readme and "fp32 is refused" in readme


def test_triton_static_config_float_layout() -> None:
    cfg = _config_pbtxt("m", "tensorrt_plan", 32, 128, 64, "float_nchw", static_batch=4)
    assert re.findall(r"dims: \[ ([^\]]+) \]", cfg) == ["4, 3, 32, 32", "4, 128"] and "format:" not in cfg
    assert "format: FORMAT_NCHW" in _config_pbtxt("m", "tensorrt_plan", 32, 128, 64, "float_nchw")


def test_export_config_refuses_a_dla_batch_out_of_range() -> None:
    for bad in (5000, -1):
        with pytest.raises(ValueError, match="dla_batch must be an integer from 1 to 4096"):
            ExportConfig(variants=("fp32",), dla_batch=bad)


def _have_cuda_driver() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_have_cuda_driver(), reason="an NVIDIA driver is installed here")
def test_device_key_without_a_driver_is_one_clear_error() -> None:
    from edge_encoder.device.tensorrt import cuda_device_properties

    with pytest.raises(RuntimeError, match=r"CUDA driver library \(libcuda.so.1\) was not found"):
        cuda_device_properties(0)


@pytest.mark.skipif(not _have_cuda_driver(), reason="no NVIDIA driver (libcuda) here")
def test_device_key_from_the_driver_api() -> None:
    from edge_encoder.device.tensorrt import cuda_device_properties

    name, capability = cuda_device_properties(0)
    assert name and re.fullmatch(r"\d+\.\d+", capability)


# ---------------------------------------------------------------------------- with TensorRT (NVIDIA GPU only)


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not installed (pip install -e .[tensorrt] on an NVIDIA machine)")
def test_keyless_plan_loads_and_a_damaged_plan_names_the_rebuild(dla_bundle, tmp_path) -> None:
    import shutil

    from edge_encoder.device.tensorrt import EngineLoadError, TensorRTEngine, build_bundle, key_path, write_key_for_plan

    bundle = Path(shutil.copytree(dla_bundle, tmp_path / "deploy"))
    plan = build_bundle(bundle, ["fp32"])[0]
    images, _ = synthetic_images(70, seed=3)
    with TensorRTEngine(plan) as engine:
        keyed = engine.embed(images)
    key_path(plan).unlink()  # as trtexec leaves it
    with TensorRTEngine(plan) as engine:
        np.testing.assert_allclose(engine.embed(images), keyed, atol=1e-5)
    write_key_for_plan(plan, bundle / "encoder_fp32.onnx")
    assert json.loads(key_path(plan).read_text())["profile"] == {"min": 1, "opt": 32, "max": 64}
    key_path(plan).unlink()
    plan.write_bytes(plan.read_bytes()[: len(plan.read_bytes()) // 2])
    with pytest.raises(EngineLoadError, match="--variant fp32.*trtexec --onnx=encoder_fp32.onnx"):
        TensorRTEngine(plan)


@pytest.mark.parametrize("version, variant, dla", [("10.3.0", "fp32", False), ("11.4.1", "fp16", False),
                                                   ("10.3.0", "int8_trt", True), ("11.4.1", "fp16", True)])
def test_every_build_clears_tf32(version: str, variant: str, dla: bool) -> None:
    """TF32 is on by default in TensorRT's builder config; FP32 layers must compute in FP32 (the fp32 gate)."""
    assert "TF32" in build_mode(version, variant, dla).cleared


def test_every_trtexec_build_line_disables_tf32() -> None:
    lines = [line.lstrip("# ") for line in trtexec_commands(["fp32", "fp16", "int8_trt"], IMAGE_SIZE, dla_batch=8)
             .splitlines() if "trtexec --onnx" in line]
    assert len(lines) == 5 and all("--noTF32" in line.split() for line in lines)
