"""The run-directory lock as the command line meets it (``edge-encoder run`` = ``python pipeline.py``, and
``edge-encoder train``) (the full two-runs race is the slow probe
``concurrent_runs``): a folder held by another process is refused in one line before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from edge_encoder import cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny.toml")


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_held_run_directory_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     command: str) -> None:
    run_dir = tmp_path / "held"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", (f"from edge_encoder.core.files import hold_lock; import time; "
                                f"hold_lock({str(run_dir)!r}); print('locked', flush=True); time.sleep(120)")],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code = cli.main([command, "--config", str(TINY), "--runs-dir", str(tmp_path), "--name", "held",
                         "--device", "cpu", "--no-progress"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: run directory {run_dir} is in use by process {holder.pid} (lock "
                                            f"{run_dir}/.lock); wait for it to finish, or choose another --name")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # no config.json, no log, nothing else
