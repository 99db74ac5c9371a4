"""``edge-encoder verify``: on a real tiny bundle, through the console script's entry point (issue 9, deliverable 5)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_encoder import cli
from edge_encoder.core.knn import loo_knn_correct
from edge_encoder.device.verify import REPORT_JSON, REPORT_MD

from tests.export.conftest import PROJECT_ROOT
from tests.export.tiny_bundle import (
    build_tiny_bundle,
    copy_bundle,
    edit_manifest,
    flip_byte,
    largest_initializer_middle,
    sha256,
)

VARIANTS = ("fp32", "fp16", "int8_trt", "int8_cpu")
FAST = ["--seconds", "0", "--warmup", "1"]  # timing loops of 10 calls: the test checks fields, not speed


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("run") / "deploy", variants=VARIANTS)


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    return copy_bundle(bundle, tmp_path / "deploy")


def run_verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["verify", *argv, *FAST])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_report(bundle: Path) -> dict:
    return json.loads((bundle / REPORT_JSON).read_text())


def test_intact_bundle_passes_and_writes_both_reports(capsys, copy) -> None:
    code, out, err = run_verify(capsys, str(copy))
    assert code == 0, err
    report = read_report(copy)
    assert report["passed"] and report["backend"] == "onnxruntime" and not report["problems"]
    assert report["device"]["cpu"] and report["versions"]["onnxruntime"] and report["versions"]["numpy"]
    assert report["reference"]["count"] == 64 and report["reference"]["knn_top1_fp32"] is not None
    assert report["timing"]["batch_sizes"] == [1, 8, 64]
    assert {f["file"] for f in report["files"]} >= {"encoder_fp32.onnx", "reference/embeddings_fp32.npy"}
    assert all(f["ok"] for f in report["files"])
    assert list(report["variants"]) == list(VARIANTS)
    for variant, entry in report["variants"].items():
        assert entry["file"] == f"encoder_{variant}.onnx" and entry["bytes"] == (copy / entry["file"]).stat().st_size
        assert entry["passed"] and entry["failures"] == []
        assert 0.9 < entry["cosine_min"] <= entry["cosine_p1"] <= entry["cosine_mean"] <= 1.0 + 1e-6
        assert 0.0 <= entry["top1_agreement"] <= 1.0 and 0.0 <= entry["top10_overlap"] <= 1.0
        assert entry["knn_top1_fp32"] == report["reference"]["knn_top1_fp32"]
        assert entry["knn_top1_delta"] == pytest.approx(entry["knn_top1"] - entry["knn_top1_fp32"])
        assert set(entry["latency"]) == {"1", "8", "64"} and entry["providers"] == ["CPUExecutionProvider"]
        for timing in entry["latency"].values():
            assert 0 < timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"] and timing["runs"] >= 10
        assert entry["images_per_s"] > 0
    fp32 = report["variants"]["fp32"]
    assert fp32["cosine_min"] > 0.9999 and fp32["top1_agreement"] == 1.0 and fp32["knn_top1_delta"] == 0.0
    md = (copy / REPORT_MD).read_text()
    assert "| variant | status | size (MB) | cosine min | top-1 agree | kNN top-1 |" in md and "## Latency" in md
    assert "| fp32 | pass |" in out and str(copy / REPORT_JSON) in out and err == ""


def test_changed_engine_byte_exits_2_naming_the_file(capsys, copy) -> None:
    flip_byte(copy / "encoder_fp16.onnx", largest_initializer_middle(copy / "encoder_fp16.onnx"))
    code, out, err = run_verify(capsys, str(copy))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "encoder_fp16.onnx" in lines[0] and "sha256" in lines[0]
    report = read_report(copy)  # still written, for the variants that ran
    assert list(report["variants"]) == ["fp32", "int8_trt", "int8_cpu"] and not report["passed"]
    assert "| fp16 | not run (see problems) |" in out


def test_changed_reference_embedding_exits_2_naming_the_hash(capsys, copy) -> None:
    path = copy / "reference" / "embeddings_fp32.npy"
    embeddings = np.load(path)
    embeddings[5] = -embeddings[5]  # one row altered, nothing else fixed
    np.save(path, embeddings)
    code, _, err = run_verify(capsys, str(copy))
    assert code == 2
    assert "reference/embeddings_fp32.npy" in err and "sha256" in err and "does not match the manifest" in err
    assert read_report(copy)["variants"] == {}  # no engine is judged against a damaged reference


def test_changed_reference_with_its_hash_updated_fails_the_gate(capsys, copy) -> None:
    """The gate itself bites: a reference row that no engine reproduces fails every variant's cosine gate."""
    path = copy / "reference" / "embeddings_fp32.npy"
    embeddings = np.load(path)
    embeddings[5] = -embeddings[5]
    buffer = io.BytesIO()
    np.save(buffer, embeddings)
    path.write_bytes(buffer.getvalue())
    digest = sha256(path)  # rewritten everywhere the manifest records it: the variant entry and `files`
    edit_manifest(copy, lambda m: (m["reference"]["embeddings_fp32"].update(sha256=digest),
                                   m["files"].update({"reference/embeddings_fp32.npy": digest})))
    code, _, err = run_verify(capsys, str(copy))
    assert code == 3
    for variant in VARIANTS:
        assert f"error: {variant}: gate cosine_min = " in err
    report = read_report(copy)
    assert not report["passed"] and all(not e["passed"] for e in report["variants"].values())
    assert report["variants"]["fp32"]["cosine_min"] < 0  # that row points the other way


def test_variant_selection_runs_only_those_but_checks_every_file(capsys, copy) -> None:
    code, out, _ = run_verify(capsys, str(copy), "--variant", "fp32", "int8_cpu")
    assert code == 0 and list(read_report(copy)["variants"]) == ["fp32", "int8_cpu"]
    assert "| fp16 |" not in out
    flip_byte(copy / "encoder_fp16.onnx", 100)
    code, _, err = run_verify(capsys, str(copy), "--variant", "fp32")
    assert code == 2 and "encoder_fp16.onnx" in err and list(read_report(copy)["variants"]) == ["fp32"]


def test_unknown_variant_is_one_line(capsys, copy) -> None:
    code, _, err = run_verify(capsys, str(copy), "--variant", "int4")
    assert code == 2 and err.count("\n") == 1 and "variant 'int4' is not in" in err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_backend_without_tensorrt_is_one_line(capsys, copy) -> None:
    code, out, err = run_verify(capsys, str(copy), "--backend", "tensorrt")
    assert code == 2 and out == "" and err.count("\n") == 1 and "tensorrt is not installed here" in err and "JetPack 6.1" in err
    assert not (copy / REPORT_JSON).exists()


def test_bundle_without_reference_set_names_it(capsys, copy) -> None:
    edit_manifest(copy, lambda m: m.pop("reference"))
    code, _, err = run_verify(capsys, str(copy))
    assert code == 2 and "has no 'reference' set" in err and "re-export" in err


def test_malformed_manifest_is_one_line(capsys, copy) -> None:
    (copy / "manifest.json").write_text("{not json")
    code, _, err = run_verify(capsys, str(copy))
    assert code == 2 and err.count("\n") == 1 and "manifest.json: not valid JSON" in err


def test_report_dir_option(capsys, copy, tmp_path) -> None:
    code, _, _ = run_verify(capsys, str(copy), "--variant", "fp32", "--report-dir", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / REPORT_JSON).is_file() and (tmp_path / "out" / REPORT_MD).is_file()
    assert not (copy / REPORT_JSON).exists()


def test_unwritable_report_dir_still_prints_the_table_and_exits_2(capsys, copy, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = run_verify(capsys, str(copy), "--variant", "fp32", "--report-dir", str(blocker / "sub"))
    assert code == 2 and "| fp32 | pass |" in out
    assert err.count("\n") == 1 and f"cannot write {REPORT_JSON} into {blocker / 'sub'}" in err


def test_onnxruntime_path_imports_neither_torch_nor_onnx(copy) -> None:
    """A device may have only onnxruntime and numpy: the whole verify run must not import torch or onnx."""
    script = ("import sys; from edge_encoder.cli import main; "
              f"code = main(['verify', {str(copy)!r}, '--variant', 'fp32', '--seconds', '0', '--warmup', '0']); "
              "heavy = sorted(m for m in ('torch', 'onnx', 'onnxscript', 'torchvision') if m in sys.modules); "
              "print('heavy', heavy); sys.exit(code or (1 if heavy else 0))")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy []" in result.stdout


def test_weighted_knn_matches_a_brute_force_oracle() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=40)
    k, t = 5, 0.1
    correct = 0
    for i in range(len(emb)):
        sims = [(float(emb[i] @ emb[j]), j) for j in range(len(emb)) if j != i]
        top = sorted(sims, reverse=True)[:k]
        votes = np.zeros(3)
        for s, j in top:
            votes[labels[j]] += np.exp(s / t)
        correct += int(np.argmax(votes) == labels[i])
    assert loo_knn_correct(emb, labels, k=k, temperature=t).mean() == pytest.approx(correct / len(emb))
    clustered = np.repeat(np.eye(4), 5, axis=0) + 0.01 * rng.normal(size=(20, 4))
    assert loo_knn_correct(clustered, np.repeat(np.arange(4), 5), k=3).all()


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs the tensorrt package and a GPU")
def test_tensorrt_backend_verifies_built_plans(capsys, copy) -> None:
    code = cli.main(["build", str(copy), "--variant", "fp32", "--variant", "fp16"])  # what a user runs on the device
    build_err = capsys.readouterr().err  # drained: what run_verify reads below is verify's alone
    assert code == 0, build_err
    code, _, err = run_verify(capsys, str(copy), "--backend", "tensorrt", "--variant", "fp32", "fp16")
    report = read_report(copy)
    assert report["backend"] == "tensorrt" and report["versions"]["tensorrt"] and report["device"]["gpu"]
    assert set(report["variants"]) == {"fp32", "fp16"}, err
    assert all(e["file"].startswith("tensorrt/") for e in report["variants"].values())
    assert code == 0, err


def test_device_report_tables_keep_their_columns_whatever_the_variant_name() -> None:
    # issue 18, point 5: a variant name or gate failure from a hand-edited manifest holding "|" or a line break
    from edge_encoder.device.verify import render_markdown

    from tests.core.test_markdown import assert_tables_keep_their_columns

    odd = "fp32|x\ny"
    entry = {"size_mb": 1.0, "cosine_min": 0.9, "cosine_p1": 0.95, "cosine_mean": 0.99, "top1_agreement": 1.0,
             "top10_overlap": 1.0, "knn_top1": 0.5, "knn_top1_delta": 0.0, "images_per_s": 100.0, "passed": False,
             "failures": ["cosine_min 0.9 < 0.99 | gate\nline"],
             "latency": {"1": {"batch": 1, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "images_per_s": 100.0,
                               "runs": 10}}}
    report = {"bundle": "/b/deploy", "backend": "onnxruntime", "passed": False, "created": "now",
              "device": {"cpu": "cpu", "cpu_count": 2, "gpu": None, "platform": "linux"},
              "versions": {"onnxruntime": "1", "tensorrt": None, "numpy": "2", "python": "3"},
              "reference": {"count": 4, "knn_top1_fp32": 0.5, "knn": {"k": 5}},
              "timing": {"batch_sizes": [1]}, "variants_requested": [odd, "fp16"], "variants": {odd: entry},
              "files": [], "problems": [], "gate_failures": []}
    tables = assert_tables_keep_their_columns(render_markdown(report))
    assert [len(t) for t in tables] == [3, 2, 2]  # header + two variants; header + one row; header + one row
    assert tables[0][1][0] == tables[1][1][0] == tables[2][1][0] == "fp32|x\\ny"
    assert tables[2][1][-1] == "cosine_min 0.9 < 0.99 | gate\\nline"
