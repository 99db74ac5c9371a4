"""TensorRT plans: engine keys, plan selection (DLA: static batch, fp16 / int8_trt only), build modes, rebuild
messages, trtexec.txt and the Triton DLA models. Everything but the last tests runs without TensorRT: the decisions
are pure functions and the builder CLI refuses bad requests before it imports tensorrt."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.export.bundle import BundleImages, export_bundle, trtexec_commands
from edge_encoder.export.config import ExportConfig
from edge_encoder.device.parity import DEFAULT_THRESHOLDS
from edge_encoder.device.tensorrt import (
    EngineKey,
    EngineKeyMismatch,
    check_engine_key,
    rebuild_command,
)
from edge_encoder.device.triton import TensorSpec, render_config
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
    # TensorRT 10 DLA INT8 from the Q/DQ-free graph: INT8 + FP16 and a calibrator returning the cache
    cached = build_mode("10.3.0", "int8_trt", dla=True, calibration_cache=True)
    assert cached.calibrator and {"INT8", "FP16"} <= set(cached.flags) and not cached.strongly_typed
    assert not int8.calibrator and not build_mode("11.4.1", "int8_trt", dla=True, calibration_cache=True).calibrator
    assert not build_mode("10.3.0", "fp16", dla=True, calibration_cache=True).calibrator


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
    # TensorRT 10 (uncommented): no fp32 on DLA; int8_trt from its Q/DQ-free graph with the calibration cache
    assert [f["onnx"] for f in dla] == ["encoder_fp16.onnx", "encoder_int8_trt_dla.onnx"]
    # TensorRT >= 11.4.1 (commented, to use instead): strongly typed, int8_trt from its Q/DQ-everywhere graph
    t11 = [(i, _flags(x[2:])) for i, x in enumerate(lines) if x.startswith("# trtexec ")]
    assert [f["onnx"] for _, f in t11] == ["encoder_fp16.onnx", "encoder_int8_trt_dla_qdq.onnx"]
    for f in dla + [f for _, f in t11]:  # DLA: one static shape everywhere, core 0, GPU fallback
        assert {f[k] for k in ("minShapes", "optShapes", "maxShapes", "shapes")} == {f"images:{DLA_BATCH}x{SHAPE}"}
        assert f["useDLACore"] == "0" and "allowGPUFallback" in f
        variant = "fp16" if f["onnx"] == "encoder_fp16.onnx" else "int8_trt"
        assert f["saveEngine"] == plan_relpath(variant, 0, DLA_BATCH)
    for f in dla:  # TensorRT 10: weakly typed with precision flags, int8_trt with its calibration cache
        int8 = f["onnx"] != "encoder_fp16.onnx"
        assert "stronglyTyped" not in f and "fp16" in f and ("int8" in f) == ("calib" in f) == int8
    assert dla[1]["calib"] == "calibration_dla.cache"
    for _, f in t11:  # TensorRT 11 has no precision flags and no --calib
        assert "stronglyTyped" in f and not {"fp16", "int8", "calib"} & set(f)
    for i, f in t11:
        assert shlex.split(lines[i + 1][2:])[:5] == ["edge-encoder", "key", f["saveEngine"], "--onnx", f["onnx"]]
    for i, f in builds:  # each build is followed by its key step
        key = shlex.split(lines[i + 1])
        assert key[:2] == ["edge-encoder", "key"]
        assert key[2] == f["saveEngine"] and key[3:5] == ["--onnx", f["onnx"]]
        assert ("--dla-core" in key) == ("useDLACore" in f)


def test_trtexec_dla_lines_are_static_examples_without_a_dla_batch() -> None:
    lines = trtexec_commands(["fp32", "fp16", "int8_trt"], IMAGE_SIZE).splitlines()
    assert not [x for x in lines if x.startswith("trtexec ") and "useDLACore" in x]
    examples = [_flags(x[2:]) for x in lines if x.startswith("# trtexec ")]
    # fp16 for TensorRT 10 and 11; int8_trt's DLA graphs exist only in a bundle exported with export.dla_batch
    assert [f["onnx"] for f in examples] == ["encoder_fp16.onnx", "encoder_fp16.onnx"]
    assert any("int8_trt: export with export.dla_batch" in x for x in lines)
    for f in examples:
        assert {f[k] for k in ("minShapes", "optShapes", "maxShapes", "shapes")} == {f"images:1x{SHAPE}"}
        assert f["saveEngine"].endswith(".dla0.b1.plan")


def test_triton_dla_models_and_manifest(dla_bundle, tmp_path) -> None:
    """The export writes no TensorRT model (an empty model folder stops tritonserver); ``edge-encoder build``'s
    Triton step writes the DLA model for the manifest's batch (fake plans: the folder layout needs no TensorRT)."""
    from edge_encoder.device.manifest import load_manifest
    from edge_encoder.device.tensorrt import write_triton_model

    from tests.device.triton_config import check_model_folder, check_repository, dla_cores

    manifest = json.loads((dla_bundle / "manifest.json").read_text())
    assert manifest["dla_batch"] == DLA_BATCH
    assert sorted(check_repository(dla_bundle / "triton", manifest)) == [f"encoder_onnx_{v}" for v in
                                                                          ("fp16", "fp32", "int8_trt")]
    bundle = shutil.copytree(dla_bundle, tmp_path / "deploy")
    manifest = load_manifest(bundle)
    specs = select_plans(manifest)[0] + select_plans(manifest, dla_core=0)[0]  # dla_batch: the manifest's
    for spec in specs:
        (bundle / spec.plan).parent.mkdir(exist_ok=True)
        (bundle / spec.plan).write_bytes(f"engine {spec.plan}".encode())
        write_triton_model(bundle, manifest, spec)
    assert not (bundle / "triton" / "encoder_trt_fp32_dla").exists()
    for variant in ("fp16", "int8_trt"):
        folder = bundle / "triton" / f"encoder_trt_{variant}_dla"
        cfg = (folder / "config.pbtxt").read_text()
        assert f'name: "encoder_trt_{variant}_dla"' in cfg and 'platform: "tensorrt_plan"' in cfg
        assert "max_batch_size: 0" in cfg and "dynamic_batching" not in cfg and "kind: KIND_NVDLA" in cfg
        dims = re.findall(r"dims: \[ ([^\]]+) \]", cfg)
        assert dims == [f"{DLA_BATCH}, {IMAGE_SIZE}, {IMAGE_SIZE}, 3", f"{DLA_BATCH}, 64"]
        plan = bundle / plan_relpath(variant, 0, DLA_BATCH)
        assert dla_cores(check_model_folder(folder, manifest, model_source=plan)) == [0]
        gpu = (bundle / "triton" / f"encoder_trt_{variant}" / "config.pbtxt").read_text()
        assert "max_batch_size: 64" in gpu and "dynamic_batching" in gpu
    check_repository(bundle / "triton", manifest)
    readme = (dla_bundle / "README.md").read_text()
    assert f"encoder_<variant>.dla0.b{DLA_BATCH}.plan" in readme and "fp32 is refused" in readme


def test_triton_static_config_float_layout() -> None:
    inp, out = TensorSpec("images", "float32", (3, 32, 32), "NCHW"), TensorSpec("embeddings", "float32", (128,))
    cfg = render_config("m", "tensorrt_plan", inp, out, max_batch_size=0, static_batch=4)
    assert re.findall(r"dims: \[ ([^\]]+) \]", cfg) == ["4, 3, 32, 32", "4, 128"] and "format:" not in cfg
    assert "format: FORMAT_NCHW" in render_config("m", "tensorrt_plan", inp, out, max_batch_size=64)


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


@pytest.mark.tensorrt
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

    from edge_encoder.device.tensorrt import EngineLoadError, TensorRTEngine, key_path, write_key_for_plan

    bundle = Path(shutil.copytree(dla_bundle, tmp_path / "deploy"))
    assert cli_main(["build", str(bundle), "--variant", "fp32"]) == 0  # what a user runs on the device
    plan = bundle / "tensorrt" / "encoder_fp32.plan"
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
    assert len(lines) == 7 and all("--noTF32" in line.split() for line in lines)  # 3 GPU, 2 DLA per TensorRT major


# -------------------------------------------------------------- DLA INT8: graphs, calibration cache, trtexec flags
# Unverified on an Orin: these check what the export writes against NVIDIA's formats and int8_trt itself.

# Flags trtexec 10.x parses (NVIDIA/TensorRT samples/common/sampleOptions.cpp, release/10.3 is the JetPack 6 one:
# BuildOptions::parse --onnx/--saveEngine/--minShapes/--optShapes/--maxShapes/--memPoolSize/--timingCacheFile/
# --noTF32/--fp16/--int8/--calib/--stronglyTyped/--allowGPUFallback, SystemOptions::parse --useDLACore,
# InferenceOptions::parse --shapes). All read in the stored late-10.x version of that file (the one that warns
# "Weakly-typed networks have been deprecated"), --useDLACore/--allowGPUFallback/--shapes/--onnx/--timingCacheFile
# also in an 8.x one; the release/10.3 blob itself could not be retrieved here, so 10.3 exactly is unverified.
TRTEXEC_10_3_FLAGS = {"onnx", "saveEngine", "minShapes", "optShapes", "maxShapes", "shapes", "memPoolSize",
                      "timingCacheFile", "noTF32", "fp16", "int8", "calib", "stronglyTyped", "useDLACore",
                      "allowGPUFallback"}
# trtexec 11.x: "TensorRT 11.x removes all precision flags (--fp16, --int8, --bf16, --fp8, --int4, --best)" and
# "removes the --int8 and --calib flags"; "--stronglyTyped is no longer needed: it is always enabled" (accepted, a
# no-op); --useDLACore / --allowGPUFallback as in 11.4 "Building and Launching the Loadable"; --noTF32 kept (TF32 is
# kept in 11.x). TensorRT 11.4.1 "Migrating trtexec Usage from TensorRT 10.x to 11.x".
TRTEXEC_11_REMOVED = {"fp16", "int8", "bf16", "fp8", "int4", "best", "calib"}
TRTEXEC_11_FLAGS = TRTEXEC_10_3_FLAGS - TRTEXEC_11_REMOVED


def _qdq_activation_scales(model) -> dict[str, float]:
    """{tensor: scale} of every QuantizeLinear on an activation, read straight from the graph (not via export)."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _dla_trunk_tensors(model) -> set[str]:
    """Activations read or written by the convolutional trunk (before the global pooling), recomputed here."""
    inits = {t.name for t in model.graph.initializer}
    trunk = [n for n in model.graph.node if n.op_type in ("Conv", "Relu", "Add", "MaxPool", "AveragePool")
             and not n.name.startswith(("preprocess/", "tail/"))]
    return {t for n in trunk for t in list(n.input) + list(n.output) if t and t not in inits}


def test_dla_calibration_cache_holds_int8_trt_scales_for_every_dla_tensor(dla_bundle) -> None:
    """The TensorRT 10 DLA INT8 build reads its scales from calibration_dla.cache: one for every tensor of the
    trunk, exactly int8_trt's Q/DQ scale wherever int8_trt quantizes, the header TensorRT's text format."""
    import onnx
    from edge_encoder.device.calibration_cache import read_cache
    from edge_encoder.device.manifest import load_manifest, read_bundle_file

    manifest = load_manifest(dla_bundle)  # typed, the dla entry included
    dla = manifest["variants"]["int8_trt"]["dla"]
    cache = dla["tensorrt10"]["calibration_cache"]
    version, algorithm, scales = read_cache(read_bundle_file(dla_bundle, cache["file"], cache["sha256"]))
    assert (cache["file"], version, algorithm) == ("calibration_dla.cache", 100300, "EntropyCalibration2")
    int8 = onnx.load(dla_bundle / "encoder_int8_trt.onnx")
    qdq = _qdq_activation_scales(int8)
    assert qdq and all(scales[t] == s for t, s in qdq.items()), "a scale differs from int8_trt's Q/DQ scale"
    implicit = onnx.load(dla_bundle / dla["tensorrt10"]["file"])
    assert not [n for n in implicit.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    needed = _dla_trunk_tensors(implicit)
    assert set(scales) == needed and needed - set(qdq), "every trunk tensor, conv/Add outputs included"
    assert cache["scales"]["from_int8_trt_qdq"] == len(qdq) and cache["scales"]["tensors"] == len(needed)
    assert all(s > 0 for s in scales.values())
    # the Q/DQ-free graph holds int8_trt's INT8 weights, dequantized: TensorRT's per-channel max/127 gets them back
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in implicit.graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    for node in (n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        q, scale = inits[node.input[0]], inits[node.input[1]]
        w = weights[node.input[0].removesuffix("_quantized")]
        trt_scale = np.abs(w.reshape(len(w), -1)).max(1) / 127
        np.testing.assert_array_equal(np.rint(w / trt_scale[:, None, None, None]), q)
        np.testing.assert_allclose(trt_scale, scale, rtol=1e-6)
    # the TensorRT >= 11.4.1 graph: Q/DQ on every trunk tensor, with the cache's scales
    explicit = onnx.load(dla_bundle / dla["tensorrt11"]["file"])
    assert _qdq_activation_scales(explicit) == scales


def test_dla_graphs_are_recorded_and_hash_checked(dla_bundle, tmp_path) -> None:
    from edge_encoder.core.files import file_sha256
    from edge_encoder.device.manifest import check_manifest, recorded_files

    manifest = json.loads((dla_bundle / "manifest.json").read_text())
    dla = manifest["variants"]["int8_trt"]["dla"]
    recorded = {key: (file, sha) for key, file, sha in recorded_files(manifest)}
    for key in ("variants.int8_trt.dla.tensorrt10.file", "variants.int8_trt.dla.tensorrt10.calibration_cache.file",
                "variants.int8_trt.dla.tensorrt11.file"):
        file, sha = recorded[key]
        assert file_sha256(dla_bundle / file) == sha and manifest["files"][file] == sha
    assert dla["verified_on_dla"] is False and dla["tensorrt11"]["min_tensorrt"] == "11.4.1"
    conformance = manifest["variants"]["int8_trt"]["tensorrt_conformance"]
    assert conformance["passed"] and conformance["dla_graphs"] == {"tensorrt10": "encoder_int8_trt_dla.onnx",
                                                                   "tensorrt11": "encoder_int8_trt_dla_qdq.onnx"}
    broken = json.loads(json.dumps(manifest))
    del broken["variants"]["int8_trt"]["dla"]["tensorrt10"]["calibration_cache"]
    with pytest.raises(ValueError, match="variants.int8_trt.dla.tensorrt10.calibration_cache"):
        check_manifest(broken)


def test_dla_plans_build_from_the_graph_of_their_tensorrt_major(dla_bundle) -> None:
    from edge_encoder.device.manifest import load_manifest
    from edge_encoder.device.trt_plans import dla_generation, resolve_dla_graph

    manifest = load_manifest(dla_bundle)
    specs = {s.variant: s for s in select_plans(manifest, dla_core=0)[0]}
    dla = manifest["variants"]["int8_trt"]["dla"]
    t10, notes = resolve_dla_graph(manifest, specs["int8_trt"], "10.3.0")
    assert not notes and (t10.onnx_file, t10.onnx_sha256) == (dla["tensorrt10"]["file"], dla["tensorrt10"]["sha256"])
    assert (t10.calibration_cache, t10.calibration_cache_sha256) == (
        "calibration_dla.cache", dla["tensorrt10"]["calibration_cache"]["sha256"])
    assert t10.plan == specs["int8_trt"].plan and t10.graph == "dla_tensorrt10"
    assert build_mode("10.3.0", "int8_trt", True, calibration_cache=t10.calibration_cache is not None).calibrator
    t11, _ = resolve_dla_graph(manifest, specs["int8_trt"], "11.4.1")
    assert (t11.onnx_file, t11.calibration_cache, t11.graph) == (dla["tensorrt11"]["file"], None, "dla_tensorrt11")
    for version in ("10.3.0", "11.4.1"):  # fp16 builds from its own graph on both
        assert resolve_dla_graph(manifest, specs["fp16"], version) == (specs["fp16"], [])
    gpu = select_plans(manifest)[0][-1]
    assert resolve_dla_graph(manifest, gpu, "10.13.0") == (gpu, [])  # a GPU plan on any version
    for version in ("10.8.0", "10.13.0", "11.0.0", "11.4.0"):  # NVIDIA: DLA in 10.0-10.7, then from 11.4.1
        with pytest.raises(ValueError, match="has no DLA support"):
            dla_generation(version)
    assert dla_generation("10.7.0") == "tensorrt10" and dla_generation("12.0.0") == "tensorrt11"
    legacy = json.loads(json.dumps(manifest))
    del legacy["variants"]["int8_trt"]["dla"]
    spec, notes = resolve_dla_graph(legacy, specs["int8_trt"], "10.3.0")
    assert spec == specs["int8_trt"] and len(notes) == 1 and "FP16 on the DLA" in notes[0]


def test_engine_key_of_a_plan_built_from_a_dla_graph_is_checked(dla_bundle, tmp_path) -> None:
    """A DLA plan of int8_trt records the DLA graph (and cache) it was built from: accepted when those are the
    manifest's, refused with the rebuild command otherwise. Fake plan bytes: no TensorRT needed."""
    from edge_encoder.core.files import file_sha256
    from edge_encoder.device.bundle_files import BundleFileError, check_tensorrt_plan
    from edge_encoder.device.trt_plans import key_path

    bundle = Path(shutil.copytree(dla_bundle, tmp_path / "deploy"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["variants"]["int8_trt"]
    relative = plan_relpath("int8_trt", 0, DLA_BATCH)
    plan = bundle / relative
    plan.parent.mkdir(exist_ok=True)
    plan.write_bytes(b"a DLA engine")
    cache_sha = entry["dla"]["tensorrt10"]["calibration_cache"]["sha256"]

    def key(onnx_sha: str, cache: str | None) -> None:
        build = {"built_by": "device.tensorrt"} | ({"calibration_cache_sha256": cache} if cache else {})
        key_path(plan).write_text(json.dumps({"sha256": file_sha256(plan), "onnx": "x.onnx", "onnx_sha256": onnx_sha,
                                              "build": build}))

    for graph in ("tensorrt10", "tensorrt11"):
        key(entry["dla"][graph]["sha256"], cache_sha if graph == "tensorrt10" else None)
        assert check_tensorrt_plan(bundle, relative, entry) == plan.resolve()
    key(entry["sha256"], None)  # a plan built from int8_trt's own graph (a bundle without DLA graphs)
    assert check_tensorrt_plan(bundle, relative, entry) == plan.resolve()
    key("0" * 64, None)
    with pytest.raises(BundleFileError, match="was built from another .*--dla-core 0 --dla-batch 8"):
        check_tensorrt_plan(bundle, relative, entry)
    key(entry["dla"]["tensorrt10"]["sha256"], "1" * 64)
    with pytest.raises(BundleFileError, match="another calibration cache"):
        check_tensorrt_plan(bundle, relative, entry)


def test_trtexec_dla_lines_use_only_flags_of_their_trtexec(dla_bundle) -> None:
    lines = (dla_bundle / "trtexec.txt").read_text().splitlines()
    t11_start = next(i for i, x in enumerate(lines) if x.startswith("# TensorRT >= 11.4.1"))
    gpu, t10, t11 = [], [], []
    for i, line in enumerate(lines):
        text = line[2:] if line.startswith("# trtexec ") else line
        if not text.startswith("trtexec "):
            continue
        args = shlex.split(text)[1:]
        assert all(re.fullmatch(r"--[A-Za-z0-9]+(=\S+)?", a) for a in args), text  # every argument parses
        flags = set(_flags(text))
        (gpu if "useDLACore" not in flags else t11 if i > t11_start else t10).append(flags)
    assert len(gpu) == 3 and len(t10) == 2 and len(t11) == 2
    for flags in gpu:  # the GPU lines run on both majors
        assert flags <= TRTEXEC_10_3_FLAGS & TRTEXEC_11_FLAGS, flags - TRTEXEC_11_FLAGS
    for flags in t10:
        assert flags <= TRTEXEC_10_3_FLAGS, flags - TRTEXEC_10_3_FLAGS
    for flags in t11:
        assert flags <= TRTEXEC_11_FLAGS and not flags & TRTEXEC_11_REMOVED, flags & TRTEXEC_11_REMOVED
    assert {"int8", "fp16", "calib"} <= t10[1] and "stronglyTyped" in t11[1]
