"""``edge-encoder evaluate``: a foreign ONNX encoder (torchvision ResNet-18 exported here) and a bundle, each to the
run report; every declared-contract mistake is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.evaluate.report import load_report

from tests.commands.conftest import QUICK, call, export_onnx, tiny_cnn

SMALL = ["--set", "data.max_train=300", "--set", "data.max_test=100"]


def test_resnet18_onnx_float_nchw_imagenet_writes_the_report(capsys, resnet18_onnx: Path, tmp_path: Path) -> None:
    code, out, err = call(capsys, "evaluate", resnet18_onnx, "--dataset", "digits", "--preset", "imagenet",
                          "--set", "data.max_train=200", "--set", "data.max_test=60",
                          "--set", "evaluate.index_benchmark=false", "--no-progress", "--runs-dir", tmp_path,
                          "--name", "r18")
    assert code == 0, err[-2000:]
    run_dir = tmp_path / "r18"
    report = load_report(run_dir)  # the schema's checks
    assert (run_dir / "report.md").is_file() and "resnet18" in out
    assert report["dataset"]["image_shape"] == [32, 32, 3]  # digits fitted to the graph's static 32x32 input
    assert report["dataset"]["num_train"] == 200 and report["dataset"]["num_test"] == 60
    row = report["metrics"]["resnet18"]
    assert row["kind"] == "engine" and row["dim"] == 512
    for key in ("knn_top1", "knn_top5", "linear_top1", "recall_at_1", "map_at_r"):
        assert 0.0 <= row[key] <= 1.0, key
    assert report["metrics"]["raw_pixels"]["kind"] == "baseline"
    engine = report["engines"]["resnet18"]
    assert engine["input_layout"] == "float_nchw" and engine["mean"] == [0.485, 0.456, 0.406]
    assert engine["std"] == [0.229, 0.224, 0.225] and engine["graph_output_shape"] == ["batch", 512]
    assert "L2-normalised by the engine wrapper" in engine["output"]
    assert "## Engines" in (run_dir / "report.md").read_text()
    assert report["train"] is None and report["export"] is None
    # The engine wrapper normalised ResNet's raw features: the cached embeddings have unit rows.
    cached = [np.load(p) for p in (run_dir / "cache" / "embeddings").glob("*.npy")]
    assert cached and all(np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5) for e in cached if e.shape[1] == 512)


def test_bundle_writes_the_report_with_every_variant(capsys, tiny_bundle: Path, tmp_path: Path) -> None:
    code, _, err = call(capsys, "evaluate", tiny_bundle, "--dataset", "digits", *SMALL, *QUICK,
                        "--runs-dir", tmp_path, "--name", "b")
    assert code == 0, err[-2000:]
    report = load_report(tmp_path / "b")
    assert set(report["metrics"]) == {"onnx_fp32", "onnx_int8_cpu", "raw_pixels"}
    assert report["metrics"]["onnx_fp32"]["kind"] == "reference"  # the other variants are compared with fp32
    int8 = report["metrics"]["onnx_int8_cpu"]
    assert int8["kind"] == "engine" and int8["precision"] == "int8_cpu" and isinstance(int8["parity_passed"], bool)
    assert -1.0 <= int8["delta_knn_top1"] <= 1.0 and 0.0 <= int8["knn_prediction_agreement"] <= 1.0
    assert report["dataset"]["image_shape"] == [16, 16, 3]  # the bundle's input size
    assert report["export"]["bundle"] == str(tiny_bundle) and set(report["export"]["variants"]) == {"fp32", "int8_cpu"}
    assert report["engines"]["onnx_fp32"]["kind"] == "bundle variant"
    # The run folder holding deploy/ names the same bundle; --variant picks one.
    code, _, err = call(capsys, "evaluate", tiny_bundle.parent, "--variant", "fp32", "--dataset", "digits", *SMALL,
                        *QUICK, "--no-baselines", "--runs-dir", tmp_path, "--name", "b1")
    assert code == 0, err[-2000:]
    assert set(load_report(tmp_path / "b1")["metrics"]) == {"onnx_fp32"}


@pytest.mark.parametrize("out, dim", [("features", 16), ("map", 16)])
def test_foreign_outputs_2d_or_4d_are_flattened_and_normalised(capsys, tmp_path: Path, out: str, dim: int) -> None:
    model = export_onnx(tiny_cnn(out), tmp_path / f"{out}.onnx", 24)
    code, _, err = call(capsys, "evaluate", model, "--dataset", "digits", "--mean", "0.5,0.5,0.5", "--std",
                        "0.25,0.25,0.25", *SMALL, *QUICK, "--no-baselines", "--runs-dir", tmp_path, "--name", out)
    assert code == 0, err[-2000:]
    report = json.loads((tmp_path / out / "report.json").read_text())
    assert report["metrics"][out]["dim"] == dim and 0.0 <= report["metrics"][out]["knn_top1"] <= 1.0


def test_dynamic_height_width_needs_and_takes_image_size(capsys, tmp_path: Path) -> None:
    model = export_onnx(tiny_cnn(), tmp_path / "dyn.onnx", 24, dynamic_hw=True)
    common = ["evaluate", model, "--dataset", "digits", "--preset", "imagenet", *SMALL, *QUICK, "--runs-dir", tmp_path]
    code, _, err = call(capsys, *common)
    assert code == 2 and "--image-size" in err and len(err.strip().splitlines()) == 1
    code, _, err = call(capsys, *common, "--image-size", "20", "--name", "dyn")
    assert code == 0, err[-2000:]
    report = json.loads((tmp_path / "dyn" / "report.json").read_text())
    assert report["engines"]["dyn"]["input_size"] == [20, 20] and report["dataset"]["image_shape"] == [20, 20, 3]


@pytest.mark.parametrize("extra, message", [
    ([], "--mean R,G,B --std R,G,B or --preset imagenet"),   # float input, no normalisation declared
    (["--input-layout", "uint8_nhwc"], "is float_nchw (tensor(float) ['batch', 3, 24, 24]), not the declared uint8_nhwc"),
    (["--input-layout", "uint8_nhwc", "--preset", "imagenet"], "uint8_nhwc normalises inside the graph"),
    (["--input-layout", "float_nchw", "--mean", "0.5,0.5"], "three comma-separated numbers"),
    (["--mean", "0.5,0.5,0.5"], "--mean and --std go together"),
    (["--preset", "imagenet", "--std", "1,1,1"], "give either --preset or --mean/--std"),
    (["--mean", "0.5,0.5,0.5", "--std", "0.2,0,0.2"], "--std values must be > 0"),
    (["--preset", "imagenet", "--image-size", "64"], "not the image size 64"),
    (["--preset", "imagenet", "--set", "train.epochs=3"], "data.KEY/evaluate.KEY only"),
    (["--preset", "imagenet", "--set", "evaluate.knn_kk=3"], "knn_kk"),
    (["--preset", "imagenet", "--variant", "fp32"], "single ONNX file"),
    (["--preset", "imagenet", "--output", "logits"], "no output 'logits'; the graph's outputs are"),
    (["--input-layout", "float_nhwc", "--preset", "tf"], "is float_nchw (tensor(float) ['batch', 3, 24, 24]), not the "
                                                         "declared float_nhwc"),
])
def test_contract_mistakes_are_one_line_exit_2(capsys, tmp_path: Path, extra: list[str], message: str) -> None:
    model = export_onnx(tiny_cnn(), tmp_path / "cnn.onnx", 24)
    code, _, err = call(capsys, "evaluate", model, "--dataset", "digits", *extra, "--runs-dir", tmp_path)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_engines_are_one_line_exit_2(capsys, tmp_path: Path, tiny_bundle: Path) -> None:
    rank3 = export_onnx(tiny_cnn("rank3"), tmp_path / "rank3.onnx", 24)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    (tmp_path / "empty").mkdir()
    cases = [
        ([rank3, "--preset", "imagenet"], "must be (N, D) or (N, C, H, W)"),
        ([garbage], "ONNX Runtime cannot load this model"),
        ([tmp_path / "missing.onnx"], "does not exist"),
        ([tmp_path / "empty"], "is not a deploy bundle"),
        ([tiny_bundle, "--preset", "imagenet"], "declares its input in manifest.json"),
        ([tiny_bundle, "--variant", "fp64"], "not in"),
    ]
    for argv, message in cases:
        code, _, err = call(capsys, "evaluate", *argv, "--dataset", "digits", "--runs-dir", tmp_path)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = call(capsys, "evaluate", tiny_bundle, "--dataset", "nope", "--runs-dir", tmp_path)
    assert code == 2 and "unknown dataset 'nope'" in err


def test_a_dataset_of_one_class_is_refused_before_any_figure(capsys, tmp_path: Path, tiny_bundle: Path) -> None:
    """One class: every kNN answer right, every figure 1.0 (a wrapper folder read as one class did this)."""
    from tests.imagedata.test_layouts import write_images

    write_images(tmp_path / "cats" / "cat", 6)
    code, _, err = call(capsys, "evaluate", tiny_bundle, "--dataset", f"folder:{tmp_path / 'cats'}",
                        "--runs-dir", tmp_path / "runs")
    assert code == 2 and "has images of one class only ('cat')" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_another_normalisation_or_output_of_the_same_file_is_not_read_from_the_cache(capsys, tmp_path: Path) -> None:
    """The embedding cache was keyed on the file alone: a rerun with another --preset reported the first one's
    figures, to the last digit."""
    model = export_onnx(tiny_cnn(), tmp_path / "cnn.onnx", 24)
    hits = []
    for extra in (["--preset", "imagenet"], ["--preset", "tf"], ["--preset", "imagenet"]):
        code, _, err = call(capsys, "evaluate", model, "--dataset", "digits", *extra, *SMALL, *QUICK,
                            "--no-baselines", "--runs-dir", tmp_path, "--name", "same")
        assert code == 0, err[-2000:]
        metrics = load_report(tmp_path / "same")["metrics"]["cnn"]
        hits.append((metrics["cache_hit"], metrics["map_at_r"]))
    assert [hit for hit, _ in hits] == [False, False, True]  # tf computed anew; imagenet again read back
    assert hits[0][1] != hits[1][1] and hits[0][1] == hits[2][1]
