"""The console script as a user meets it: every subcommand answers ``--help``; no subcommand means ``run``;
``compare`` prints two reports side by side and refuses a malformed one in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_encoder.cli import COMMANDS
from edge_encoder.evaluate.report import write_report

from tests.commands.conftest import call, run_script


def test_every_subcommand_answers_help() -> None:
    assert tuple(COMMANDS) == ("run", "train", "export", "evaluate", "embed", "verify", "build", "key", "compare")
    for command in COMMANDS:
        result = run_script(command, "--help", timeout=120)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert result.stdout.startswith(f"usage: edge-encoder {command}"), (command, result.stdout[:200])
    top = run_script("--help", timeout=120)
    assert top.returncode == 0 and all(command in top.stdout for command in COMMANDS)


@pytest.mark.parametrize("command", ["verify", "build", "key", "embed", "compare"])
def test_device_commands_import_neither_torch_nor_onnx(command: str) -> None:
    """The base install has no torch: its commands' --help (their whole import chain) must not need it."""
    import subprocess
    import sys

    code = (f"import sys\nfrom edge_encoder import cli\nparser = cli.build_parser({command!r})\n"
            f"cli.handler({command!r})\nheavy = sorted(m for m in ('torch', 'onnx', 'sklearn', 'faiss', 'torchvision') "
            "if m in sys.modules)\nassert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_a_subcommand_the_arguments_are_runs(tmp_path: Path) -> None:
    result = run_script("--config", tmp_path / "no_such.toml", "--runs-dir", tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: config file {tmp_path / 'no_such.toml'} does not exist"


def _report(name: str, knn: float) -> dict:
    return {"schema_version": 1, "name": name, "dataset": {"name": "digits", "num_train": 10, "num_test": 5},
            "metrics": {"onnx_fp32": {"kind": "engine", "knn_top1": knn, "embed_images_per_s": 100.0}}}


def test_compare_prints_two_reports_side_by_side(capsys, tmp_path: Path) -> None:
    write_report(tmp_path / "a", _report("a", 0.5))
    write_report(tmp_path / "b", _report("b", 0.75))
    code, out, err = call(capsys, "compare", tmp_path / "a", tmp_path / "b" / "report.json")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("onnx_fp32") and "kNN top-1" in line)
    assert row.split()[-3:] == ["0.5000", "0.7500", "+0.2500"]


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 1, "name": "x", "dataset": [], "metrics": {}}', "report['dataset'] must be an object"),
    ('{"schema_version": 1, "name": "x", "dataset": {}, "metrics": []}', "report['metrics']"),
    ("[1, 2]", "report must be a dict"),
    ('{"schema_version": 1, "name": ', "is not a readable JSON report"),
    (b"\xff\xfe\x00 not utf-8", "is not a readable JSON report"),
])
def test_compare_refuses_a_malformed_report_in_one_line(capsys, tmp_path: Path, content: str | bytes,
                                                        message: str) -> None:
    write_report(tmp_path / "good", _report("good", 0.5))
    bad = tmp_path / "bad" / "report.json"
    bad.parent.mkdir()
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = call(capsys, "compare", tmp_path / "good", tmp_path / "bad")
    assert code == 2 and message in err and str(bad) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_compare_of_a_missing_run_is_one_line(capsys, tmp_path: Path) -> None:
    code, _, err = call(capsys, "compare", tmp_path / "nope", tmp_path / "nope2")
    assert code == 2 and "no report at" in err and len(err.strip().splitlines()) == 1
