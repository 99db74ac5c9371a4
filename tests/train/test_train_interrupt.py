"""Crash safety in a real child process: SIGKILL loses at most the steps since the last save; SIGTERM saves."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from edge_encoder.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.loop import train_moco

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _child(images_path: Path, run_dir: Path, config: TrainConfig) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from edge_encoder.train.config import train_config_from_dict
        from edge_encoder.train.loop import train_moco
        train_moco(np.load({str(images_path)!r}), train_config_from_dict({config.to_dict()!r}), {str(run_dir)!r},
                   preprocess_mean={MEAN!r}, preprocess_std={STD!r}, progress=False)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stderr=subprocess.PIPE)


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, min_step: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = latest_checkpoint(run_dir)
        if last is not None and int(last.stem.split("_")[1]) >= min_step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_the_last_save(tiny_images: np.ndarray, tmp_path: Path,
                                                      tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=30, checkpoint_every_steps=3, checkpoint_every_epochs=0, keep_last=3)
    np.save(tmp_path / "x.npy", tiny_images)
    proc = _child(tmp_path / "x.npy", tmp_path / "run", config)
    _wait_for_checkpoint(tmp_path / "run", proc, min_step=3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved_steps = [int(p.stem.split("_")[1]) for p in list_checkpoints(tmp_path / "run")]
    last_saved = max(saved_steps)
    assert last_saved < config.epochs * 4, "the child finished before it was killed; make the run longer"
    resumed = train_moco(tiny_images, config, tmp_path / "run", preprocess_mean=MEAN, preprocess_std=STD,
                         progress=False, stop_at_step=last_saved + 2)
    assert resumed.resumed_from_step == last_saved  # lost only the steps after the last save
    straight = train_moco(tiny_images, config, tmp_path / "straight", preprocess_mean=MEAN, preprocess_std=STD,
                          progress=False, stop_at_step=last_saved + 2)
    a = load_checkpoint(resumed.checkpoint_path)["state"]["model"]
    b = load_checkpoint(straight.checkpoint_path)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # and continued exactly as an uninterrupted run


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tiny_images: np.ndarray, tmp_path: Path,
                                              tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=200, checkpoint_every_steps=2, checkpoint_every_epochs=0)
    np.save(tmp_path / "x.npy", tiny_images)
    proc = _child(tmp_path / "x.npy", tmp_path / "run", config)
    _wait_for_checkpoint(tmp_path / "run", proc, min_step=2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert '"event": "signal"' in log
    last = latest_checkpoint(tmp_path / "run")
    assert last is not None and load_checkpoint(last)["state"]["step"] >= 2
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("signum", [signal.SIGINT])
def test_sigint_in_process_raises_keyboardinterrupt_after_saving(tiny_images: np.ndarray, tmp_path: Path,
                                                                 tiny_config: Callable[..., TrainConfig],
                                                                 signum: int) -> None:
    import os

    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signum)  # arrives during epoch 1's monitor call
        return {"knn_top1": 0.0}

    config = tiny_config(epochs=3, knn_every_epochs=1, checkpoint_every_epochs=0)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 4"):
        train_moco(tiny_images, config, tmp_path, preprocess_mean=MEAN, preprocess_std=STD, progress=False,
                   knn_monitor=monitor)
    assert load_checkpoint(latest_checkpoint(tmp_path))["state"]["step"] == 4
