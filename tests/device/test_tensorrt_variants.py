"""No TensorRT artefact names int8_cpu (issue 16): over a real bundle holding all four variants, the trtexec lines,
the builder's default plans, verify's TensorRT defaults and the Triton TensorRT models come from one list."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_encoder.device.manifest import load_manifest
from edge_encoder.device.trt_plans import TENSORRT_VARIANTS, select_plans
from edge_encoder.device.verify import VerifyOptions, _default_variants

from tests.export.tiny_bundle import build_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("all4") / "deploy")


def test_the_bundle_has_int8_cpu_for_onnx_runtime(bundle: Path) -> None:
    assert "int8_cpu" in load_manifest(bundle)["variants"]
    assert (bundle / "encoder_int8_cpu.onnx").is_file()


def test_no_tensorrt_artefact_names_int8_cpu(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    trtexec = (bundle / "trtexec.txt").read_text()
    assert "int8_cpu" not in trtexec
    assert all(f"encoder_{v}.onnx" in trtexec for v in TENSORRT_VARIANTS)
    specs, _ = select_plans(manifest)
    assert [s.variant for s in specs] == list(TENSORRT_VARIANTS)
    assert _default_variants(manifest, VerifyOptions(backend="tensorrt")) == list(TENSORRT_VARIANTS)
    assert "int8_cpu" in _default_variants(manifest, VerifyOptions(backend="onnxruntime"))
    # The Triton TensorRT models are written by `edge-encoder build`, one per plan it builds (device.triton)
    from edge_encoder.device.triton import tensorrt_model_config

    assert not list((bundle / "triton").glob("encoder_trt_*"))  # none at export: they come with their plans
    assert [tensorrt_model_config(manifest, s.variant)[0] for s in specs] == [f"encoder_trt_{v}" for v in TENSORRT_VARIANTS]
    with pytest.raises(ValueError, match="int8_cpu"):
        tensorrt_model_config(manifest, "int8_cpu")


def test_verify_refuses_int8_cpu_on_tensorrt_by_name(bundle: Path, capsys) -> None:
    from edge_encoder import cli

    code = cli.main(["verify", str(bundle), "--backend", "tensorrt", "--variant", "int8_cpu", "--seconds", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    # Without TensorRT here the missing backend is named first; with it, the variant.
    assert "int8_cpu" in err or "tensorrt is not installed" in err
