"""Every file of a bundle is recorded and checked (issue 16, point 4): the manifest's ``files`` lists each file the
export wrote with its SHA-256, ``device_files`` the patterns of what the device may add; ``edge-encoder verify``
refuses a changed, missing or unexpected file (exit 2, naming it), and ``--manifest-sha256`` pins the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from edge_encoder import cli
from edge_encoder.device.manifest import DEVICE_FILES, MANIFEST_NAME, check_manifest, is_device_file, load_manifest
from edge_encoder.export.bundle import BundleResult

from tests.export.tiny_bundle import build_tiny_bundle, copy_bundle, edit_manifest, sha256

FAST = ["--seconds", "0", "--warmup", "0", "--variant", "fp32"]  # every file is checked whatever runs


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("run") / "deploy", variants=("fp32", "fp16"), parity=32)


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    return copy_bundle(bundle, tmp_path / "deploy")


def verify(capsys: pytest.CaptureFixture[str], bundle: Path, *argv: str) -> tuple[int, list[str]]:
    code = cli.main(["verify", str(bundle), *FAST, *argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def _all_files(bundle: Path) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ the manifest


def test_the_manifest_records_every_other_file_with_its_sha256(bundle) -> None:
    manifest = load_manifest(bundle)
    files = manifest["files"]
    assert set(files) == _all_files(bundle) - {MANIFEST_NAME}
    assert {"README.md", "trtexec.txt", "calibration.json", "triton/encoder_onnx_fp16/1/model.onnx",
            "triton/encoder_onnx_fp16/config.pbtxt", "reference/embeddings_fp32.npy", "encoder_fp32.onnx"} <= set(files)
    assert all(files[name] == sha256(bundle / name) for name in files)
    assert manifest["device_files"] == list(DEVICE_FILES)


def test_the_bundle_readme_says_how_to_pin_the_manifest(bundle) -> None:
    readme = (bundle / "README.md").read_text()
    assert "--manifest-sha256 HEX" in readme and "unexpected" in readme


def test_the_pin_line_names_the_manifest_digest_and_the_command(copy, capsys) -> None:
    line = BundleResult(copy / MANIFEST_NAME, {}).pin_line()
    digest = sha256(copy / MANIFEST_NAME)
    assert line == f"manifest sha256: {digest} (pin it: edge-encoder verify {copy} --manifest-sha256 {digest})"
    assert verify(capsys, copy, "--manifest-sha256", digest)[0] == 0
    assert BundleResult(copy / MANIFEST_NAME, {}).summary()["manifest_sha256"] == digest


@pytest.mark.parametrize("edit, key", [
    (lambda m: m.update(files=["README.md"]), "files"),
    (lambda m: m["files"].update({"manifest.json": "0" * 64}), "files"),
    (lambda m: m["files"].update({"../outside.txt": "0" * 64}), "files"),
    (lambda m: m["files"].update({"README.md": "abc"}), "files.README.md"),
    (lambda m: m.update(device_files="tensorrt/*.plan"), "device_files"),
    (lambda m: m.update(device_files=["/etc/*"]), "device_files"),
])
def test_the_new_keys_are_typed(copy, edit, key) -> None:
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    edit(manifest)
    with pytest.raises(ValueError, match=rf"key '{key}' must be"):
        check_manifest(manifest, copy / MANIFEST_NAME)


def test_device_patterns_match_folder_by_folder() -> None:
    assert is_device_file("tensorrt/encoder_fp16.plan") and is_device_file("tensorrt/encoder_fp16.dla0.b8.plan")
    assert is_device_file("tensorrt/encoder_fp16.plan.key.json") and is_device_file("device_report.md")
    assert is_device_file("triton/encoder_trt_fp16_dla/1/model.plan")
    assert not is_device_file("tensorrt/sub/encoder_fp16.plan")  # `*` never crosses a folder
    assert not is_device_file("triton/encoder_trt_fp16/2/model.plan")
    assert not is_device_file("triton/encoder_onnx_fp16/1/model.plan") and not is_device_file("tensorrt/notes.txt")
    assert not is_device_file("tensorrt/encoder_fp16.plan", [])


# ------------------------------------------------------------------------------------------------ verify


def test_the_intact_bundle_passes_twice(capsys, copy) -> None:
    assert verify(capsys, copy) == (0, [])
    assert verify(capsys, copy) == (0, [])  # its own device_report.{json,md} are files the device writes
    report = json.loads((copy / "device_report.json").read_text())
    assert {f["file"] for f in report["files"]} >= {"trtexec.txt", "triton/encoder_onnx_fp32/1/model.onnx"}
    assert all(f["ok"] for f in report["files"])


def test_a_changed_triton_copy_is_exit_2_naming_it(capsys, copy) -> None:
    path = copy / "triton" / "encoder_onnx_fp16" / "1" / "model.onnx"
    recorded = load_manifest(copy)["files"]["triton/encoder_onnx_fp16/1/model.onnx"]
    assert not path.samefile(copy / "encoder_fp16.onnx")  # a copied bundle: no hard link any more
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1
    assert "triton/encoder_onnx_fp16/1/model.onnx" in errors[0] and "key 'files'" in errors[0]
    assert recorded[:12] in errors[0] and sha256(path)[:12] in errors[0]


def test_an_edited_trtexec_txt_is_exit_2_naming_it(capsys, copy) -> None:
    with open(copy / "trtexec.txt", "a") as f:
        f.write("trtexec --onnx=encoder_fp16.onnx --saveEngine=tensorrt/encoder_fp16.plan --best\n")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "bundle file trtexec.txt" in errors[0] and "does not match" in errors[0]


def test_a_missing_readme_is_exit_2_naming_it(capsys, copy) -> None:
    (copy / "README.md").unlink()
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "README.md" in errors[0] and "missing" in errors[0]


@pytest.mark.parametrize("name", ["notes.txt", "triton/encoder_onnx_fp32/2/model.onnx", "tensorrt/extra.bin",
                                  ".DS_Store", "reference/._images.npy"])
def test_an_unexpected_file_is_exit_2_naming_it(capsys, copy, name) -> None:
    path = copy / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"anything")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and f"unexpected file {name}" in errors[0]
    assert "remove it" in errors[0] and str(path) in errors[0]
    if Path(name).name.startswith("."):
        assert "hidden" in errors[0]


def test_a_symlink_not_recorded_is_unexpected(capsys, copy) -> None:
    (copy / "latest").symlink_to(copy / "triton")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "unexpected file latest" in errors[0]


def test_a_rewritten_manifest_cannot_pass_the_pin(capsys, copy) -> None:
    pinned = sha256(copy / MANIFEST_NAME)
    stricter = load_manifest(copy)["reference"]["gates"]["fp32"]["min_cosine"] + 1e-7
    edit_manifest(copy, lambda m: m["reference"]["gates"]["fp32"].update(min_cosine=stricter))
    assert verify(capsys, copy)[0] == 0  # the edited manifest is self-consistent: only the pin catches it
    code, errors = verify(capsys, copy, "--manifest-sha256", pinned)
    assert code == 2 and len(errors) == 1 and "manifest.json" in errors[0] and pinned[:12] in errors[0]


def test_a_file_and_its_recorded_hash_both_rewritten_cannot_pass_the_pin(capsys, copy) -> None:
    pinned = sha256(copy / MANIFEST_NAME)
    (copy / "trtexec.txt").write_text("trtexec --onnx=encoder_fp32.onnx --best\n")
    edit_manifest(copy, lambda m: m["files"].update({"trtexec.txt": sha256(copy / "trtexec.txt")}))
    assert verify(capsys, copy)[0] == 0
    assert verify(capsys, copy, "--manifest-sha256", pinned.upper())[0] == 2


@pytest.mark.parametrize("value", ["abc", "g" * 64, "0" * 63])
def test_a_malformed_pin_is_exit_2(capsys, copy, value) -> None:
    code, errors = verify(capsys, copy, "--manifest-sha256", value)
    assert code == 2 and len(errors) == 1 and "64 hexadecimal digits" in errors[0]
    assert not (copy / "device_report.json").exists()


def test_a_bundle_without_files_is_refused_with_re_export(capsys, copy) -> None:
    edit_manifest(copy, lambda m: m.pop("files"))
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "records no 'files'" in errors[0] and "re-export" in errors[0]


# ------------------------------------------------------------------------------------------- files the device adds


def _device_files(bundle: Path, plan_bytes: bytes = b"serialized engine") -> Path:
    """What `edge-encoder build` and its Triton copy leave (a fake plan: no TensorRT is needed to check them)."""
    onnx_sha = load_manifest(bundle)["variants"]["fp16"]["sha256"]
    plan = bundle / "tensorrt" / "encoder_fp16.plan"
    plan.parent.mkdir(exist_ok=True)
    plan.write_bytes(plan_bytes)
    key = {"sha256": hashlib.sha256(plan_bytes).hexdigest(), "onnx_sha256": onnx_sha}
    Path(str(plan) + ".key.json").write_text(json.dumps(key))
    (bundle / "tensorrt" / "timing.cache").write_bytes(b"cache")
    model = bundle / "triton" / "encoder_trt_fp16"
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text('name: "encoder_trt_fp16"\nplatform: "tensorrt_plan"\n')
    (model / "1" / "model.plan").write_bytes(plan_bytes)
    return plan


def test_files_the_device_adds_are_accepted(capsys, copy) -> None:
    _device_files(copy)
    dla = copy / "tensorrt" / "encoder_fp16.dla0.b8.plan"  # a trtexec-built DLA plan: no key, accepted (warning)
    dla.write_bytes(b"dla engine")
    (copy / "triton" / "encoder_trt_fp16_dla" / "1").mkdir(parents=True)
    (copy / "triton" / "encoder_trt_fp16_dla" / "1" / "model.plan").write_bytes(b"dla engine")
    (copy / "triton" / "encoder_trt_fp16_dla" / "config.pbtxt").write_text('name: "encoder_trt_fp16_dla"\n')
    assert verify(capsys, copy) == (0, [])
    rows = {f["file"]: f for f in json.loads((copy / "device_report.json").read_text())["files"]}
    assert rows["triton/encoder_trt_fp16/1/model.plan"]["ok"] and rows["tensorrt/timing.cache"]["key"] == "device_files"


def test_a_triton_plan_other_than_its_tensorrt_plan_is_exit_2(capsys, copy) -> None:
    plan = _device_files(copy)
    (copy / "triton" / "encoder_trt_fp16" / "1" / "model.plan").write_bytes(b"another engine")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "triton/encoder_trt_fp16/1/model.plan" in errors[0]
    assert "tensorrt/encoder_fp16.plan.key.json" in errors[0] and sha256(plan)[:12] in errors[0]


def test_a_triton_plan_without_its_tensorrt_plan_is_exit_2(capsys, copy) -> None:
    (copy / "triton" / "encoder_trt_fp32" / "1").mkdir(parents=True, exist_ok=True)
    (copy / "triton" / "encoder_trt_fp32" / "1" / "model.plan").write_bytes(b"engine")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and "triton/encoder_trt_fp32/1/model.plan" in errors[0]
    assert "edge-encoder build" in errors[0]


def test_a_plan_changed_after_its_key_is_exit_2(capsys, copy) -> None:
    plan = _device_files(copy)
    plan.write_bytes(b"serialized engine, tampered")
    code, errors = verify(capsys, copy)
    # the plan differs from its key, and so does the Triton copy from the key: both named
    assert code == 2 and any("bundle file tensorrt/encoder_fp16.plan" in e for e in errors)


@pytest.mark.parametrize("name, says", [
    ("tensorrt/encoder_fp32.plan.key.json", "has no plan tensorrt/encoder_fp32.plan"),
    ("tensorrt/encoder_int4.plan", "variant 'int4'"),
    ("triton/encoder_trt_int4/1/model.plan", "for no variant"),
])
def test_device_files_that_fit_no_variant_or_plan_are_exit_2(capsys, copy, name, says) -> None:
    path = copy / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    code, errors = verify(capsys, copy)
    assert code == 2 and len(errors) == 1 and name in errors[0] and says in errors[0]
