"""device.bundle_files: the manifest is typed, nothing outside the bundle is read, and no engine is opened from a file
that is not the one the manifest names (issue 12, defects 1, 2 and 10)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.device.bundle_files import (
    BundleFileError,
    load_manifest,
    open_engine,
    recorded_files,
    resolve_bundle_file,
)
from edge_encoder.device.engines import OnnxRuntimeEngine

from tests.export.tiny_bundle import (
    build_tiny_bundle,
    copy_bundle,
    edit_manifest,
    flip_byte,
    largest_initializer_middle,
    sha256,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("run") / "deploy", variants=("fp32", "fp16"))


@pytest.fixture
def damaged(bundle, tmp_path) -> Path:
    return copy_bundle(bundle, tmp_path / "deploy")


def test_intact_bundle_opens_and_matches_its_reference(bundle) -> None:
    images = np.load(bundle / "reference" / "images.npy")
    reference = np.load(bundle / "reference" / "embeddings_fp32.npy")
    with open_engine(bundle, "fp32") as engine:
        assert engine.name == "onnx_fp32" and engine.source_path == (bundle / "encoder_fp32.onnx").resolve()
        out = engine.embed(images)
    assert out.shape == reference.shape and float((out * reference).sum(1).min()) > 0.9999


def test_flipped_weight_byte_is_refused_naming_the_file(damaged) -> None:
    """Issue 12 acceptance: one byte in the middle of the largest initializer of encoder_fp32.onnx."""
    path = damaged / "encoder_fp32.onnx"
    images = np.load(damaged / "reference" / "images.npy")
    flip_byte(path, largest_initializer_middle(path))
    # ONNX Runtime alone loads and runs the damaged file without a word ...
    with OnnxRuntimeEngine(path) as unchecked:
        assert np.isfinite(unchecked.embed(images)).all()
    # ... the bundle loader refuses it before any session exists.
    with pytest.raises(BundleFileError) as err:
        open_engine(damaged, "fp32")
    message = str(err.value)
    assert "encoder_fp32.onnx" in message and "variants.fp32.file" in message and "sha256" in message
    assert sha256(path)[:12] in message and "\n" not in message
    with open_engine(damaged, "fp16") as other:  # the intact variant still opens
        assert other.embed(images[:2]).shape[0] == 2


def _outside_copy(bundle: Path) -> Path:
    """A genuine copy of encoder_fp32.onnx outside the bundle (same bytes, so the hash alone would pass)."""
    other = bundle.parent / "other"
    other.mkdir(exist_ok=True)
    (other / "encoder_fp32.onnx").write_bytes((bundle / "encoder_fp32.onnx").read_bytes())
    return other / "encoder_fp32.onnx"


@pytest.mark.parametrize("case", ["dotdot", "etc_passwd", "absolute", "symlink_out", "symlinked_dir_out", "nested_dotdot"])
def test_paths_outside_the_bundle_are_refused_naming_the_key(damaged, case) -> None:
    outside = _outside_copy(damaged)
    if case == "symlink_out":
        os.symlink(outside, damaged / "link.onnx")
    if case == "symlinked_dir_out":
        os.symlink(outside.parent, damaged / "models")
    file, digest = {
        "dotdot": ("../other/encoder_fp32.onnx", sha256(outside)),
        "etc_passwd": ("/etc/passwd", sha256(Path("/etc/passwd")) if Path("/etc/passwd").is_file() else "0" * 64),
        "absolute": (str(outside), sha256(outside)),
        "symlink_out": ("link.onnx", sha256(outside)),
        "symlinked_dir_out": ("models/encoder_fp32.onnx", sha256(outside)),
        "nested_dotdot": ("triton/../../other/encoder_fp32.onnx", sha256(outside)),
    }[case]
    edit_manifest(damaged, lambda m: m["variants"]["fp32"].update(file=file, sha256=digest))
    with pytest.raises(BundleFileError) as err:
        open_engine(damaged, "fp32")
    message = str(err.value)
    assert "'variants.fp32.file'" in message and file in message and "\n" not in message


def test_a_symlink_inside_the_bundle_is_followed(damaged) -> None:
    """Containment is about where the real file is, not about symlinks as such."""
    os.symlink("encoder_fp32.onnx", damaged / "alias.onnx")
    edit_manifest(damaged, lambda m: m["variants"]["fp32"].update(file="alias.onnx"))
    with open_engine(damaged, "fp32") as engine:
        assert engine.source_path == (damaged / "encoder_fp32.onnx").resolve()


def test_a_manifest_symlinked_from_outside_is_refused(damaged, tmp_path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text((damaged / "manifest.json").read_text())
    (damaged / "manifest.json").unlink()
    os.symlink(outside, damaged / "manifest.json")
    with pytest.raises(BundleFileError, match="outside the bundle"):
        load_manifest(damaged)


def test_a_missing_file_is_named(damaged) -> None:
    (damaged / "encoder_fp16.onnx").unlink()
    with pytest.raises(BundleFileError, match=r"encoder_fp16.onnx \(key 'variants.fp16.file'\) is missing"):
        open_engine(damaged, "fp16")


def test_resolve_checks_the_hash_before_returning(damaged) -> None:
    path = damaged / "encoder_fp16.onnx"
    assert resolve_bundle_file(damaged, "encoder_fp16.onnx", sha256(path), key="k") == path.resolve()
    with pytest.raises(BundleFileError, match=r"encoder_fp16.onnx \(key 'k'\) does not match the manifest: its "
                                              r"sha256 is [0-9a-f]{12}\.\.\. but the manifest records 000000000000"):
        resolve_bundle_file(damaged, "encoder_fp16.onnx", "0" * 64, key="k")


def test_recorded_files_lists_variants_and_reference(bundle) -> None:
    keys = {key: file for key, file, _ in recorded_files(load_manifest(bundle))}
    assert keys == {"variants.fp32.file": "encoder_fp32.onnx", "variants.fp16.file": "encoder_fp16.onnx",
                    "reference.images.file": "reference/images.npy",
                    "reference.embeddings_fp32.file": "reference/embeddings_fp32.npy",
                    "reference.labels.file": "reference/labels.npy"}


BAD_MANIFESTS = [
    ("top level a list", None, "(top level)"),
    ("format", lambda m: m.update(format="other/1"), "'format'"),
    ("variants a list", lambda m: m.update(variants=["fp32"]), "'variants'"),
    ("variants empty", lambda m: m.update(variants={}), "'variants'"),
    ("variant a string", lambda m: m["variants"].update(fp32="encoder_fp32.onnx"), "'variants.fp32'"),
    ("variant without file", lambda m: m["variants"]["fp32"].pop("file"), "'variants.fp32.file'"),
    ("variant without sha256", lambda m: m["variants"]["fp32"].pop("sha256"), "'variants.fp32.sha256'"),
    ("file an int", lambda m: m["variants"]["fp32"].update(file=3), "'variants.fp32.file'"),
    ("sha256 not hex", lambda m: m["variants"]["fp32"].update(sha256="abc"), "'variants.fp32.sha256'"),
    ("passed a string", lambda m: m["variants"]["fp32"].update(passed="yes"), "'variants.fp32.passed'"),
    ("preprocessing a list", lambda m: m.update(preprocessing=[1]), "'preprocessing'"),
    ("mean a string", lambda m: m["preprocessing"].update(mean="0.5,0.5,0.5"), "'preprocessing.mean'"),
    ("std zero", lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]), "'preprocessing.std'"),
    ("in_graph a string", lambda m: m["preprocessing"].update(in_graph="true"), "'preprocessing.in_graph'"),
    ("image_size a string", lambda m: m["input"].update(image_size="16"), "'input.image_size'"),
    ("embedding_dim missing", lambda m: m["output"].pop("embedding_dim"), "'output.embedding_dim'"),
    ("profile max 0", lambda m: m["tensorrt_profile"].update(max=0), "'tensorrt_profile.max'"),
    ("profile unordered", lambda m: m["tensorrt_profile"].update(min=64, max=8), "'tensorrt_profile'"),
    ("dla_batch negative", lambda m: m.update(dla_batch=-1), "'dla_batch'"),
    ("provenance missing", lambda m: m.pop("provenance"), "'provenance'"),
    ("reference images missing", lambda m: m["reference"].pop("images"), "'reference.images'"),
    ("reference shape a string", lambda m: m["reference"]["labels"].update(shape="64"), "'reference.labels.shape'"),
    ("gate a string", lambda m: m["reference"]["gates"]["fp32"].update(min_cosine="high"),
     "'reference.gates.fp32.min_cosine'"),
    ("gate unknown", lambda m: m["reference"]["gates"]["fp32"].update(min_vibes=1), "'reference.gates.fp32.min_vibes'"),
    ("gate missing", lambda m: m["reference"]["gates"].pop("fp16"), "'reference.gates'"),
]


@pytest.mark.parametrize("edit, key", [(e, k) for _, e, k in BAD_MANIFESTS], ids=[n for n, _, _ in BAD_MANIFESTS])
def test_wrong_types_are_one_line_naming_file_and_key(damaged, edit, key) -> None:
    if edit is None:
        (damaged / "manifest.json").write_text("[1, 2]")
    else:
        edit_manifest(damaged, edit)
    with pytest.raises(ValueError) as err:
        load_manifest(damaged)
    message = str(err.value)
    assert str(damaged / "manifest.json") in message and key in message and "\n" not in message
    with pytest.raises(ValueError):  # every reader goes through the same check
        open_engine(damaged, "fp16")


@pytest.mark.parametrize("text", ['{"format": "edge-encoder/deploy-bundle/1", ', "", "\xff\xfe not utf-8"])
def test_broken_json_is_one_line(damaged, text) -> None:
    (damaged / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        load_manifest(damaged)
    assert str(damaged / "manifest.json") in str(err.value) and "\n" not in str(err.value)


def test_no_bundle_or_no_manifest(tmp_path) -> None:
    with pytest.raises(BundleFileError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(BundleFileError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_unknown_variant_and_backend(bundle) -> None:
    with pytest.raises(ValueError, match=r"variant 'int4' is not in .*available: \['fp16', 'fp32'\]"):
        open_engine(bundle, "int4")
    with pytest.raises(ValueError, match="backend must be"):
        open_engine(bundle, "fp32", backend="openvino")


# TensorRT plans: the checks run before tensorrt is imported, so they are tested on any machine.


def _write_plan(bundle: Path, plan_bytes: bytes, key: dict) -> Path:
    plan = bundle / "tensorrt" / "encoder_fp16.plan"
    plan.parent.mkdir(exist_ok=True)
    plan.write_bytes(plan_bytes)
    Path(str(plan) + ".key.json").write_text(json.dumps(key))
    return plan


def test_plan_whose_bytes_differ_from_its_key_is_refused(damaged) -> None:
    onnx_sha = load_manifest(damaged)["variants"]["fp16"]["sha256"]
    plan = _write_plan(damaged, b"serialized engine", {"sha256": "1" * 64, "onnx_sha256": onnx_sha})
    with pytest.raises(BundleFileError) as err:
        open_engine(damaged, "fp16", backend="tensorrt")
    assert "tensorrt/encoder_fp16.plan" in str(err.value) and "encoder_fp16.plan.key.json" in str(err.value)
    assert sha256(plan)[:12] in str(err.value)


def test_plan_built_from_another_onnx_is_refused_with_the_rebuild_command(damaged) -> None:
    plan = _write_plan(damaged, b"serialized engine", {"onnx_sha256": "2" * 64})
    with pytest.raises(BundleFileError) as err:
        open_engine(damaged, "fp16", backend="tensorrt")
    assert "built from another encoder_fp16.onnx" in str(err.value)
    assert f"edge-encoder build {damaged} --variant fp16" in str(err.value)
    assert plan.is_file()


def test_missing_plan_names_the_build_command(damaged) -> None:
    with pytest.raises(BundleFileError, match=r"no TensorRT plan at tensorrt/encoder_fp32.plan; "
                                              r"build it on this device: edge-encoder build"):
        open_engine(damaged, "fp32", backend="tensorrt")
    with pytest.raises(BundleFileError, match=r"0 DLA plans of 'fp16' for DLA core 0 .* --dla-core 0 --dla-batch N"):
        open_engine(damaged, "fp16", backend="tensorrt", dla_core=0)
    edit_manifest(damaged, lambda m: m.update(dla_batch=8))
    with pytest.raises(BundleFileError, match=r"no TensorRT plan at tensorrt/encoder_fp16.dla0.b8.plan; .*"
                                              r"--variant fp16 --dla-core 0 --dla-batch 8"):
        open_engine(damaged, "fp16", backend="tensorrt", dla_core=0)


def test_plan_symlinked_out_of_the_bundle_is_refused(damaged, tmp_path) -> None:
    outside = tmp_path / "engine.plan"
    outside.write_bytes(b"serialized engine")
    (damaged / "tensorrt").mkdir()
    os.symlink(outside, damaged / "tensorrt" / "encoder_fp16.plan")
    with pytest.raises(BundleFileError, match="outside the bundle"):
        open_engine(damaged, "fp16", backend="tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_intact_plan_without_tensorrt_is_one_line(damaged) -> None:
    onnx_sha = load_manifest(damaged)["variants"]["fp16"]["sha256"]
    data = b"serialized engine"
    import hashlib

    _write_plan(damaged, data, {"sha256": hashlib.sha256(data).hexdigest(), "onnx_sha256": onnx_sha})
    with pytest.raises(ValueError, match="tensorrt is not installed"):
        open_engine(damaged, "fp16", backend="tensorrt")


def test_tensorrt_build_reads_only_checked_files(damaged) -> None:
    """``edge-encoder build``'s ``device.tensorrt.build_plans`` goes through the same loader: an outside path is
    refused before TensorRT is imported (so this runs without it)."""
    from edge_encoder.device.tensorrt import build_plans
    from edge_encoder.device.trt_plans import select_plans

    edit_manifest(damaged, lambda m: m["variants"]["fp32"].update(file="/etc/passwd"))
    manifest = load_manifest(damaged)
    specs, _ = select_plans(manifest, ["fp32"])
    with pytest.raises(BundleFileError, match="'variants.fp32.file'"):
        build_plans(damaged, manifest, specs)
    assert not (damaged / "tensorrt").exists()
