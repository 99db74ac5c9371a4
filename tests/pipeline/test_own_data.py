"""The pipeline on the user's own images: --train-data (labels never used) with and without --eval-data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edge_encoder.commands.options import resolve_run_config
from edge_encoder.commands.run import build_parser
from edge_encoder.pipeline import main as run_main
from edge_encoder.settings import validate_config

from tests.imagedata.test_layouts import write_images, write_split_tree

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny.toml")
NOT_MEASURED = "Accuracy was not measured: no labelled evaluation set was given (--eval-data)."


def _data_settings(*argv: str):
    args = build_parser().parse_args(["--config", str(TINY), *argv])
    return validate_config(resolve_run_config(args), "x").data


def test_flags_set_the_data_keys_and_dataset_keeps_its_evaluation_role() -> None:
    data = _data_settings("--train-data", "images:/a")
    assert (data.train_data, data.eval_data, data.dataset) == ("images:/a", "", "digits")
    data = _data_settings("--train-data", "images:/a", "--eval-data", "folder:/b")
    assert (data.train_data, data.eval_data) == ("images:/a", "folder:/b")
    data = _data_settings("--dataset", "folder:/c", "--train-data", "images:/a")  # --dataset: the evaluation set
    assert (data.train_data, data.eval_data, data.dataset) == ("images:/a", "folder:/c", "folder:/c")
    assert _data_settings("--train-data", "images:/a", "--set", "data.stream=true").stream is True
    result = subprocess.run([sys.executable, "pipeline.py", "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=False)
    assert "--train-data" in result.stdout and "--eval-data" in result.stdout


def test_bad_training_data_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run_main(["--config", str(TINY), "--runs-dir", str(tmp_path), "--train-data", f"list:{tmp_path}/x.txt"])
    output = capsys.readouterr().err
    assert code == 2 and f"image list {tmp_path}/x.txt does not exist" in output and "Traceback" not in output
    write_split_tree(tmp_path / "amb", "val", {"a": (2, 1)})
    write_images(tmp_path / "amb" / "validation" / "a", 1)
    code = run_main(["--config", str(TINY), "--runs-dir", str(tmp_path), "--dataset", f"folder:{tmp_path / 'amb'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: image folder") and "could each be the evaluation split" in err[-1]


@pytest.mark.slow
def test_train_on_a_flat_folder_with_and_without_a_labelled_eval_set(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_images(flat, 40, ".png", size=(20, 20), seed=1)
    write_images(flat / "nested" / "deeper", 40, ".JPG", size=(24, 18), seed=2)
    labelled = write_split_tree(tmp_path / "labelled", "val", {c: (16, 6) for c in ("a", "b", "c", "d")}, ".jpg")
    common = ["--config", str(TINY), "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--train-data",
              f"folder:{flat}", "--set", "data.image_size=16"]

    assert run_main([*common, "--eval-data", f"folder:{labelled}", "--name", "with_eval"]) == 0
    report = json.loads((tmp_path / "runs" / "with_eval" / "report.json").read_text())
    assert report["accuracy_measured"] is True and report["dataset"]["spec"] == f"folder:{labelled}"
    assert report["dataset"]["num_classes"] == 4 and report["dataset"]["num_test"] == 24
    assert report["train_data"]["spec"] == f"folder:{flat}" and report["train_data"]["num_images"] == 80
    for engine in ("onnx_fp32", "raw_pixels"):
        assert 0.0 <= report["metrics"][engine]["knn_top1"] <= 1.0
        assert 0.0 <= report["metrics"][engine]["linear_top1"] <= 1.0
    assert "onnx_fp32" in report["label_free"]["engines"]

    assert run_main([*common, "--name", "no_eval"]) == 0
    run = tmp_path / "runs" / "no_eval"
    report = json.loads((run / "report.json").read_text())
    assert report["accuracy_measured"] is False and report["metrics"] == {}
    assert report["accuracy_note"] == "no labelled evaluation set was given (--eval-data)"
    assert report["train_data"]["held_out"] == 16 and report["train_data"]["num_images"] == 64
    fp32 = report["label_free"]["engines"]["onnx_fp32"]
    assert 0.0 <= fp32["alignment"] <= 4.0 and fp32["uniformity"] <= 0.0 and fp32["reference_cosine_min"] > 0.99
    assert set(report["label_free"]["engines"]) >= {"pytorch_fp32", "onnx_int8_cpu", "raw_pixels", "random_init"}
    assert report["export"]["variants"]["fp32"]["passed"] is True  # parity checked on the held-out images
    assert f"**{NOT_MEASURED}**" in (run / "report.md").read_text()
