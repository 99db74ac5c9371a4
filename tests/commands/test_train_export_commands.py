"""``edge-encoder train`` then ``edge-encoder export``: a checkpoint, exported again into bundles; the parity gate's
exit code 3; mistakes one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from edge_encoder import cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = PROJECT_ROOT / "tests" / "pipeline" / "tiny.toml"
FP32_ONLY = ["--set", "export.variants=['fp32']", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(runs dir, checkpoint)`` of one tiny ``edge-encoder train`` (digits, 2 epochs)."""
    runs = tmp_path_factory.mktemp("runs")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", "--config", str(TINY), "--runs-dir", str(runs), "--name", "t", "--device", "cpu",
                         "--no-progress"])
    assert code == 0
    return runs, Path(out.getvalue().strip().splitlines()[-1])


def call(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_checkpoints_and_config_only_and_resumes(capsys, trained: tuple[Path, Path]) -> None:
    runs, checkpoint = trained
    run_dir = runs / "t"
    assert checkpoint.is_file() and checkpoint.parent == run_dir / "train" / "checkpoints"
    assert json.loads((run_dir / "config.json").read_text())["data"]["dataset"] == "digits"
    assert not (run_dir / "deploy").exists() and not (run_dir / "report.json").exists()
    before = sorted(p.name for p in checkpoint.parent.iterdir())
    code, out, err = call(capsys, "train", "--config", TINY, "--runs-dir", runs, "--name", "t", "--device", "cpu",
                          "--no-progress")  # a finished training is reused as it is
    assert code == 0, err[-2000:]
    assert Path(out.strip().splitlines()[-1]) == checkpoint
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == before


def test_export_a_checkpoint_into_the_runs_bundle(capsys, trained: tuple[Path, Path]) -> None:
    runs, checkpoint = trained
    code, out, err = call(capsys, "export", checkpoint, *FP32_ONLY)
    assert code == 0, err[-2000:]
    manifest = json.loads((runs / "t" / "deploy" / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32"} and manifest["variants"]["fp32"]["passed"] is True
    assert manifest["input"]["image_size"] == 16  # the checkpoint's input size (tiny.toml: data.image_size = 16)
    assert "fp32" in out and f"bundle: {runs / 't' / 'deploy'}" in out
    digest = hashlib.sha256((runs / "t" / "deploy" / "manifest.json").read_bytes()).hexdigest()  # issue 16: the pin
    assert (f"manifest sha256: {digest} (pin it: edge-encoder verify {runs / 't' / 'deploy'} --manifest-sha256 "
            f"{digest})") in out.splitlines()


def test_a_failed_gate_exits_3_unless_allowed(capsys, trained: tuple[Path, Path], tmp_path: Path) -> None:
    runs, checkpoint = trained
    # One min/max calibration image ruins INT8 (cosine min 0.91 against the gate's 0.98 here): a sure failure.
    hostile = ["--set", "export.variants=['fp32','int8_cpu']", "--set", "export.calibration_images=1",
               "--set", "export.calibration_method='minmax'", "--no-progress"]
    # The run's config.json records export.allow_failed = true (tiny.toml); --set overrides it, as in `run`.
    code, out, err = call(capsys, "export", runs / "t", "--out", tmp_path / "deploy", *hostile,
                          "--set", "export.allow_failed=false")  # a run folder stands for its latest checkpoint
    assert code == 3, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: gate failed for onnx_int8_cpu (")
    manifest = json.loads((tmp_path / "deploy" / "manifest.json").read_text())
    assert manifest["variants"]["int8_cpu"]["passed"] is False  # the files are kept, marked failed
    assert "int8_cpu   FAILED" in out
    # A checkpoint outside a run has the default allow_failed = false: the flag accepts the failure.
    loose = shutil.copy(checkpoint, tmp_path / "encoder.pt")
    code, _, err = call(capsys, "export", loose, "--dataset", "digits", "--out", tmp_path / "d2", *hostile,
                        "--set", "data.max_train=256", "--allow-failed-parity")
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "d2" / "manifest.json").read_text())["variants"]["int8_cpu"]["passed"] is False


def test_export_a_checkpoint_outside_a_run_needs_dataset_and_out(capsys, trained: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    _, checkpoint = trained
    loose = shutil.copy(checkpoint, tmp_path / "encoder.pt")
    code, _, err = call(capsys, "export", loose, "--out", tmp_path / "b", *FP32_ONLY)
    assert code == 2 and "give --dataset SPEC" in err
    code, _, err = call(capsys, "export", loose, "--dataset", "digits", *FP32_ONLY)
    assert code == 2 and "give --out DIR" in err
    code, _, err = call(capsys, "export", loose, "--calibration-data", "digits", "--out", tmp_path / "b", *FP32_ONLY)
    assert code == 0, err[-2000:]
    assert (tmp_path / "b" / "encoder_fp32.onnx").is_file()


def test_train_and_export_mistakes_are_one_line_exit_2(capsys, trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = trained
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["export", tmp_path / "missing.pt"], "does not exist"),
        (["export", garbage, "--dataset", "digits", "--out", tmp_path / "x"], "not a loadable checkpoint"),
        (["export", tmp_path], "no checkpoint in"),
        (["export", checkpoint, "--set", "train.epochs=1"], "this command takes export.KEY/data.KEY only"),
        (["export", checkpoint, "--set", "export.variants=['fp16']"], "export.variants"),
        (["export", checkpoint, "--set", "data.image_size=32"], "fixes the image size"),
        (["train", "--config", TINY, "--runs-dir", tmp_path, "--set", "train.epochz=1"], "epochz"),
        (["train", "--config", TINY, "--runs-dir", tmp_path, "--dataset", "nope"], "unknown dataset 'nope'"),
    ]
    for argv, message in cases:
        code, _, err = call(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "tiny").exists()  # a refused train leaves no run folder


# ---------------------------------------------------------------------------------------------- issue 18


def _user_folder(root: Path) -> dict[str, tuple[bytes, int]]:
    """A user's folder of documents and photos (one nested), and its snapshot: path -> (bytes, mtime_ns)."""
    (root / "photos").mkdir(parents=True)
    (root / "letter.docx").write_bytes(b"PK\x03\x04 dear ...")
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    state = {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
             for p in sorted(root.rglob("*"))}
    state["."] = (b"", root.stat().st_mtime_ns)
    return state


def test_export_onto_a_folder_that_is_not_a_bundle_exits_2_and_keeps_every_file(
        capsys, trained: tuple[Path, Path], tmp_path: Path) -> None:
    runs, _ = trained
    mine = tmp_path / "Documents"
    before = _user_folder(mine)
    code, out, err = call(capsys, "export", runs / "t", "--out", mine, *FP32_ONLY)
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bundle folder {mine} exists, is not empty and is not a "
                                                   "deploy bundle"), err
    assert _snapshot(mine) == before  # every file byte-identical, every mtime unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def test_run_refuses_a_deploy_folder_of_user_files_before_training(capsys, tmp_path: Path) -> None:
    deploy = tmp_path / "t" / "deploy"
    before = _user_folder(deploy)
    code, _, err = call(capsys, "run", "--config", TINY, "--runs-dir", tmp_path, "--name", "t", "--device", "cpu",
                        "--no-progress")
    assert code == 2 and f"bundle folder {deploy} exists, is not empty" in err, err[-2000:]
    assert _snapshot(deploy) == before
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["deploy"]  # no lock, config or training


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_batch_larger_than_the_data_is_refused_before_the_run_folder(capsys, tmp_path: Path, command: str) -> None:
    """train and run refuse it at the same point (right after loading the data), so neither leaves a folder."""
    code, _, err = call(capsys, command, "--config", TINY, "--runs-dir", tmp_path, "--name", "big", "--device", "cpu",
                        "--set", "train.batch_size=512", "--no-progress")  # tiny.toml: 256 training images
    assert code == 2, err[-2000:]
    assert err.strip().splitlines() == [
        "error: config key 'train.batch_size': 512 is larger than the 256 training images"], err
    assert list(tmp_path.iterdir()) == []  # no run folder, no lock, no config.json
