"""The Triton model repository loads as exported (issue 16): the export writes only complete ONNX Runtime models, and
``edge-encoder build`` adds each TensorRT model (GPU, DLA) whole, next to its plan. Every config.pbtxt is parsed with
Triton's own model_config.proto and held to Triton's rules (tests/device/triton_config.py). TensorRT is not needed:
the TensorRT models are written for crafted plan files, through the same step ``build_plans`` runs after each plan."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edge_encoder.device import tensorrt as trt_device
from edge_encoder.device.manifest import load_manifest
from edge_encoder.device.triton import (
    TensorSpec,
    onnx_model_config,
    render_config,
    tensorrt_model_config,
    write_model,
    write_tensorrt_model,
)
from edge_encoder.device.trt_plans import DLA_VARIANTS, TENSORRT_VARIANTS, select_plans
from google.protobuf import text_format

from tests.device.triton_config import (
    check_model_folder,
    check_repository,
    config_problems,
    dla_cores,
    model_config_pb2,
    parse_config,
)
from tests.export.conftest import IMAGE_SIZE
from tests.export.tiny_bundle import build_tiny_bundle, copy_bundle

ALL4 = ("fp32", "fp16", "int8_trt", "int8_cpu")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("triton") / "deploy")


@pytest.fixture()
def copy(bundle, tmp_path) -> Path:
    return copy_bundle(bundle, tmp_path / "deploy")


def _fake_plans(bundle: Path, specs) -> dict[str, Path]:
    """A distinct fake plan file per spec (the folder layout needs no real engine)."""
    plans = {}
    for spec in specs:
        plan = bundle / spec.plan
        plan.parent.mkdir(exist_ok=True)
        plan.write_bytes(f"fake engine {spec.plan}".encode())
        plans[spec.plan] = plan
    return plans


# ------------------------------------------------------------------------------------------------ the proto itself


def test_the_proto_is_tritons_and_refuses_unknown_fields() -> None:
    pb2 = model_config_pb2()
    assert pb2.ModelConfig.DESCRIPTOR.full_name == "inference.ModelConfig"
    assert "secondary_devices" in pb2.ModelInstanceGroup.DESCRIPTOR.fields_by_name
    assert pb2.ModelInstanceGroup.SecondaryDevice.SecondaryDeviceKind.Name(0) == "KIND_NVDLA"
    with pytest.raises(text_format.ParseError):
        parse_config('name: "m"\nplatform: "tensorrt_plan"\nmax_batch_sizes: 8\n')
    with pytest.raises(text_format.ParseError):
        parse_config('name: "m"\ninput [ { name: "x" data_type: TYPE_UINT8 format: FORMAT_HWC dims: [ 3 ] } ]\n')


def test_the_rules_catch_what_triton_refuses(bundle) -> None:
    """The checker is not vacuous: each crafted config breaks one rule and is named."""
    manifest = load_manifest(bundle)
    _, good = tensorrt_model_config(manifest, "fp16")
    _, dla = tensorrt_model_config(manifest, "fp16", dla_core=0, dla_batch=8)
    assert config_problems(parse_config(good), "encoder_trt_fp16", manifest) == []
    assert config_problems(parse_config(dla), "encoder_trt_fp16_dla", manifest) == []
    broken = {
        "name": (good, "other_folder"),
        "format with 4 dims": (dla.replace("data_type: TYPE_UINT8\n", "data_type: TYPE_UINT8\n    format: FORMAT_NHWC\n"),
                               "encoder_trt_fp16_dla"),
        "batch in dims of a batching model": (good.replace(f"dims: [ {IMAGE_SIZE}, {IMAGE_SIZE}, 3 ]",
                                                           f"dims: [ 8, {IMAGE_SIZE}, {IMAGE_SIZE}, 3 ]"),
                                              "encoder_trt_fp16"),
        "no batch in dims at max_batch_size 0": (good.replace("max_batch_size: 64", "max_batch_size: 0")
                                                 .split("dynamic_batching")[0], "encoder_trt_fp16"),
        "dynamic batching at max_batch_size 0": (dla + "dynamic_batching { }\n", "encoder_trt_fp16_dla"),
        "dla on onnxruntime": (dla.replace("tensorrt_plan", "onnxruntime_onnx"), "encoder_trt_fp16_dla"),
        "input name": (good.replace('name: "images"', 'name: "input"'), "encoder_trt_fp16"),
        "dtype": (good.replace("TYPE_UINT8", "TYPE_FP32"), "encoder_trt_fp16"),
        "platform": (good.replace("tensorrt_plan", "tensorrt"), "encoder_trt_fp16"),
    }
    for what, (text, folder) in broken.items():
        assert config_problems(parse_config(text), folder, manifest), what


# ------------------------------------------------------------------------------------------------ export


def test_the_exported_repository_holds_complete_onnx_models_only(bundle) -> None:
    manifest = load_manifest(bundle)
    configs = check_repository(bundle / "triton", manifest)
    assert sorted(configs) == sorted(f"encoder_onnx_{v}" for v in ALL4)  # int8_cpu and int8_trt included
    assert not list((bundle / "triton").glob("encoder_trt_*"))
    for variant in ALL4:
        cfg = configs[f"encoder_onnx_{variant}"]
        assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == manifest["tensorrt_profile"]["max"]
        assert list(cfg.input[0].dims) == [IMAGE_SIZE, IMAGE_SIZE, 3] and list(cfg.output[0].dims) == [64]
        assert model_config_pb2().ModelInput.Format.Name(cfg.input[0].format) == "FORMAT_NHWC"
        assert cfg.HasField("dynamic_batching") and not dla_cores(cfg)
        model = bundle / "triton" / f"encoder_onnx_{variant}" / "1" / "model.onnx"
        assert model.read_bytes() == (bundle / f"encoder_{variant}.onnx").read_bytes()
        assert onnx_model_config(manifest, variant)[1] == (model.parent.parent / "config.pbtxt").read_text()
    # nothing left beside triton/ by the model writes
    assert not [p.name for p in bundle.iterdir() if p.name.startswith(".")]


def test_the_readme_says_the_tensorrt_models_come_with_edge_encoder_build(bundle) -> None:
    readme = (bundle / "README.md").read_text()
    triton = readme.split("## Serve with Triton", 1)[1]
    assert "loads as exported" in triton and "The TensorRT models appear after `edge-encoder build`" in triton
    assert "triton/encoder_trt_<variant>/" in triton and "triton/encoder_trt_<variant>_dla/" in triton


def test_float_nchw_configs() -> None:
    inp = TensorSpec("images", "float32", (3, 32, 32), "NCHW")
    out = TensorSpec("embeddings", "float32", (128,))
    manifest = {"input": {"name": "images", "dtype": "float32", "shape": ["batch", 3, 32, 32], "layout": "NCHW"},
                "output": {"name": "embeddings", "embedding_dim": 128}}
    batching = parse_config(render_config("m", "onnxruntime_onnx", inp, out, max_batch_size=64))
    static = parse_config(render_config("m", "tensorrt_plan", inp, out, max_batch_size=0, static_batch=4, dla_core=1))
    assert config_problems(batching, "m", manifest) == [] and config_problems(static, "m", manifest) == []
    assert model_config_pb2().ModelInput.Format.Name(batching.input[0].format) == "FORMAT_NCHW"
    assert list(static.input[0].dims) == [4, 3, 32, 32] and static.input[0].format == 0 and dla_cores(static) == [1]
    for bad in (dict(max_batch_size=0), dict(max_batch_size=8, dla_core=0)):
        with pytest.raises(ValueError):
            render_config("m", "tensorrt_plan", inp, out, **bad)


# ------------------------------------------------------------------------------------------------ edge-encoder build


def test_tensorrt_models_for_every_gpu_plan(copy) -> None:
    manifest = load_manifest(copy)
    specs, _ = select_plans(manifest)
    assert [s.variant for s in specs] == list(TENSORRT_VARIANTS)
    plans = _fake_plans(copy, specs)
    for spec in specs:
        assert trt_device.write_triton_model(copy, manifest, spec) == copy / "triton" / f"encoder_trt_{spec.variant}"
    configs = check_repository(copy / "triton", manifest)
    for spec in specs:
        folder = copy / "triton" / f"encoder_trt_{spec.variant}"
        cfg = check_model_folder(folder, manifest, model_source=plans[spec.plan])
        assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == spec.profile["max"] == 64
        assert cfg.HasField("dynamic_batching") and not dla_cores(cfg)
    assert "encoder_trt_int8_cpu" not in configs
    with pytest.raises(ValueError, match="int8_cpu"):
        tensorrt_model_config(manifest, "int8_cpu")
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("core", [0, 1])
def test_the_dla_model_is_fixed_batch_on_its_core(copy, core) -> None:
    manifest = load_manifest(copy)
    specs, _ = select_plans(manifest, dla_core=core, dla_batch=8)
    assert [s.variant for s in specs] == list(DLA_VARIANTS)
    plans = _fake_plans(copy, specs)
    for spec in specs:
        trt_device.write_triton_model(copy, manifest, spec)
        folder = copy / "triton" / f"encoder_trt_{spec.variant}_dla"
        cfg = check_model_folder(folder, manifest, model_source=plans[spec.plan])
        assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching") and cfg.input[0].format == 0
        assert list(cfg.input[0].dims) == [8, IMAGE_SIZE, IMAGE_SIZE, 3] and list(cfg.output[0].dims) == [8, 64]
        assert dla_cores(cfg) == [core]
        assert model_config_pb2().ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    check_repository(copy / "triton", manifest)
    assert not (copy / "triton" / "encoder_trt_fp32_dla").exists()


def test_build_plans_writes_each_model_after_its_plan(copy, monkeypatch) -> None:
    """``build_plans`` with TensorRT's build replaced: each plan gets its Triton model; a failing plan keeps those
    before it served and writes no model of its own."""
    manifest = load_manifest(copy)

    def fake_build(onnx_path, plan_path, *, variant, **_):
        if variant == "int8_trt":
            raise RuntimeError("TensorRT said no")
        Path(plan_path).write_bytes(b"engine of " + Path(onnx_path).name.encode())
        return Path(plan_path)

    monkeypatch.setattr(trt_device, "build_engine", fake_build)
    specs, _ = select_plans(manifest)
    with pytest.raises(trt_device.BuildFailure, match="int8_trt"):
        trt_device.build_plans(copy, manifest, specs)
    for variant in ("fp32", "fp16"):
        check_model_folder(copy / "triton" / f"encoder_trt_{variant}", manifest,
                           model_source=copy / "tensorrt" / f"encoder_{variant}.plan")
    assert not (copy / "triton" / "encoder_trt_int8_trt").exists()
    check_repository(copy / "triton", manifest)


def test_a_bundle_without_triton_gets_no_model_and_a_log_line(copy, caplog) -> None:
    shutil.rmtree(copy / "triton")
    manifest = load_manifest(copy)
    specs, _ = select_plans(manifest, ["fp16"])
    _fake_plans(copy, specs)
    with caplog.at_level(logging.INFO, logger="edge_encoder.device.tensorrt"):
        assert trt_device.write_triton_model(copy, manifest, specs[0]) is None
    assert not (copy / "triton").exists()
    assert re.search(r"no Triton model for tensorrt/encoder_fp16\.plan: .* has no triton/ folder", caplog.text)


# ------------------------------------------------------------------------------------------------ whole folders


def test_a_rebuilt_model_replaces_the_old_one_whole(copy) -> None:
    manifest = load_manifest(copy)
    (spec,), _ = select_plans(manifest, ["fp16"])
    plan = _fake_plans(copy, [spec])[spec.plan]
    trt_device.write_triton_model(copy, manifest, spec)
    plan.unlink()
    plan.write_bytes(b"rebuilt engine")  # a new inode, as atomic_write_bytes gives a rebuilt plan
    trt_device.write_triton_model(copy, manifest, spec)
    check_model_folder(copy / "triton" / "encoder_trt_fp16", manifest, model_source=plan)
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_no_model_folder_and_no_temp(copy, monkeypatch) -> None:
    """A full disk while the model folder is written: build_plans says so in one line, keeps the plan, and neither a
    half model in triton/ nor a temp folder beside it is left."""
    manifest = load_manifest(copy)
    specs, _ = select_plans(manifest, ["fp32"])

    def fake_build(onnx_path, plan_path, **_):
        Path(plan_path).write_bytes(b"engine")
        return Path(plan_path)

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trt_device, "build_engine", fake_build)
    monkeypatch.setattr(os, "link", full_disk)
    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(trt_device.BuildFailure, match="fp32: built tensorrt/encoder_fp32.plan but could not write "
                                                      "its Triton model: .*No space left"):
        trt_device.build_plans(copy, manifest, specs)
    assert (copy / "tensorrt" / "encoder_fp32.plan").is_file()
    assert not (copy / "triton" / "encoder_trt_fp32").exists()
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


def test_a_temp_folder_of_a_killed_build_is_removed(copy) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = copy / f".triton-encoder_trt_fp16.tmp-{child.pid}-abc123"
    (stale / "1").mkdir(parents=True)
    live = copy / f".triton-encoder_trt_fp16.tmp-{os.getpid()}-def456"  # a build still running: left alone
    live.mkdir()
    manifest = load_manifest(copy)
    (spec,), _ = select_plans(manifest, ["fp16"])
    _fake_plans(copy, [spec])
    trt_device.write_triton_model(copy, manifest, spec)
    assert not stale.exists() and live.exists()


def test_write_model_refuses_a_missing_model_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        write_model(tmp_path / "triton", "m", "name: \"m\"\n", tmp_path / "missing.plan", "tensorrt_plan")
    assert not (tmp_path / "triton").exists()
    assert write_tensorrt_model(tmp_path / "nothing", {}, "fp16", tmp_path / "x.plan") is None
