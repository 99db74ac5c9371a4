"""The streamed data path (an indexable image sequence through DataLoader workers) trains exactly as the in-memory
ndarray path: same rows per step, same augmentation, bit-identical weights on CPU; resume, signals and bad items."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch
from edge_encoder.imagedata import FolderImages
from edge_encoder.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_backbone,
    load_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.data import StepBatchSampler, resolve_workers
from edge_encoder.train.distributed import DistContext
from edge_encoder.train.loop import _batches, train_moco

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class ArraySequence:
    """A plain indexable image source (module level, so it pickles into spawned workers too)."""

    def __init__(self, images: np.ndarray, bad: dict[int, np.ndarray] | None = None) -> None:
        self.images, self.bad = images, bad or {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        return self.bad.get(index, self.images[index])


def _train(images: Any, run_dir: Path, config: TrainConfig, **kw: Any):  # noqa: ANN202
    return train_moco(images, config, run_dir, preprocess_mean=MEAN, preprocess_std=STD, progress=False, **kw)


def _assert_same_training(a: Any, b: Any) -> None:
    """Two TrainResults: bit-identical model state (weights, BN statistics, queue), optimiser state and loss."""
    sa, sb = load_checkpoint(a.checkpoint_path)["state"], load_checkpoint(b.checkpoint_path)["state"]
    assert sa["step"] == sb["step"]
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    for oa, ob in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(oa["momentum_buffer"], ob["momentum_buffer"])
    assert a.final_loss == b.final_loss


def test_sampler_takes_the_rows_of_the_in_memory_path_on_every_rank() -> None:
    n, batch, spe = 50, 8, 6  # 2 images of each epoch left out (drop_last)
    data = torch.arange(n)
    for world in (1, 2, 4):
        for rank in range(world):
            for start in (0, 5, 13):  # a resume mid-epoch and across epoch boundaries
                run = SimpleNamespace(config=TrainConfig(batch_size=batch, seed=7), steps_per_epoch=spe, step=start,
                                      dist=DistContext(rank=rank, world=world))
                expected = [rows.tolist() for _, rows in _batches(run, data, 20)]  # type: ignore[arg-type]
                sampler = StepBatchSampler(n, batch, spe, seed=7, start=start, stop=20, rank=rank, world=world)
                assert list(sampler) == expected and len(sampler) == 20 - start
                assert all(len(rows) == batch // world for rows in expected)


@pytest.mark.parametrize("workers", [2, 0])
def test_streamed_sequence_trains_bit_identically_to_the_array(tiny_images: np.ndarray, tmp_path: Path,
                                                               tiny_config: Callable[..., TrainConfig],
                                                               workers: int) -> None:
    in_memory = _train(tiny_images, tmp_path / "array", tiny_config(data_workers=workers))
    streamed = _train(ArraySequence(tiny_images), tmp_path / "seq", tiny_config(data_workers=workers))
    assert streamed.steps == in_memory.steps == 8
    _assert_same_training(in_memory, streamed)
    log = (tmp_path / "seq" / "train_log.jsonl").read_text()
    assert f'"data_workers": {workers}' in log and '"fetch_wait_frac"' in log and '"data_wait_frac"' in log
    assert not multiprocessing.active_children()  # the workers were stopped


@pytest.mark.parametrize("first", ["streamed", "array"])
def test_streamed_resume_is_bit_exact(tiny_images: np.ndarray, tmp_path: Path,
                                      tiny_config: Callable[..., TrainConfig], first: str) -> None:
    config = tiny_config(epochs=2, checkpoint_every_epochs=0, data_workers=2)
    sequence = ArraySequence(tiny_images)
    straight = _train(sequence, tmp_path / "straight", config)
    # mid-epoch stop; data_workers may change on resume, and so may the data path (the same rows either way)
    part = _train(sequence if first == "streamed" else tiny_images, tmp_path / "resumed", config, stop_at_step=3)
    assert part.steps == 3 and not multiprocessing.active_children()
    resumed = _train(sequence, tmp_path / "resumed", tiny_config(epochs=2, checkpoint_every_epochs=0, data_workers=1))
    assert resumed.resumed_from_step == 3 and resumed.steps == 8
    _assert_same_training(straight, resumed)
    again = _train(sequence, tmp_path / "resumed", config)  # finished: returns without starting workers
    assert again.checkpoint_path == resumed.checkpoint_path and not multiprocessing.active_children()


def test_png_folder_trains_end_to_end_through_folder_images(tmp_path: Path, write_png_tree: Callable[..., Path],
                                                             tiny_config: Callable[..., TrainConfig]) -> None:
    root = write_png_tree(tmp_path / "pngs", classes=4, per_class=20, size=(20, 18))
    images = FolderImages.open(root, "train", image_size=16, test_fraction=0.2, seed=0)
    assert len(images) == 64
    config = tiny_config(epochs=1, data_workers=2)
    streamed = _train(images, tmp_path / "run", config)
    assert streamed.steps == 4 and np.isfinite(streamed.final_loss)
    backbone, preprocess, _ = load_backbone(streamed.checkpoint_path)
    assert preprocess.image_size == 16 and backbone(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    decoded = np.stack([images[i] for i in range(len(images))])  # the oracle: the same images held in memory
    _assert_same_training(_train(decoded, tmp_path / "array", config), streamed)


@pytest.mark.parametrize("bad, error, message", [
    ({0: np.zeros((16, 16, 3), np.float32)}, ValueError, r"train image 0 is float32 \(16, 16, 3\); every train image must be a numpy uint8"),
    ({0: np.zeros((16, 16), np.uint8)}, ValueError, r"train image 0 is uint8 \(16, 16\); every train image must be a numpy uint8 \(H, W, 3\)"),
    ({0: np.zeros((16, 16, 4), np.uint8)}, ValueError, r"train image 0 is uint8 \(16, 16, 4\)"),
    ({0: np.zeros((16, 12, 3), np.uint8)}, ValueError, r"images are 16x12 \(not square\)"),
    ({0: torch.zeros(16, 16, 3, dtype=torch.uint8)}, ValueError, "train image 0 is a Tensor; every train image must be a numpy uint8"),
])
def test_bad_first_item_is_refused_before_training(tiny_images: np.ndarray, tmp_path: Path,
                                                   tiny_config: Callable[..., TrainConfig], bad: dict,
                                                   error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _train(ArraySequence(tiny_images, bad), tmp_path, tiny_config())
    assert not list_checkpoints(tmp_path)


def test_bad_sequences_are_refused_before_training(tiny_images: np.ndarray, tmp_path: Path,
                                                   tiny_config: Callable[..., TrainConfig]) -> None:
    with pytest.raises(TypeError, match="indexable image sequence"):
        _train(iter(tiny_images), tmp_path, tiny_config())
    with pytest.raises(ValueError, match="is empty"):
        _train(ArraySequence(tiny_images[:0]), tmp_path, tiny_config())
    with pytest.raises(ValueError, match="'train.batch_size': 16 is larger than the 10 training images"):
        _train(ArraySequence(tiny_images[:10]), tmp_path, tiny_config())
    assert not list_checkpoints(tmp_path)


@pytest.mark.parametrize("workers", [2, 0])
def test_a_later_bad_item_stops_training_naming_it(tiny_images: np.ndarray, tmp_path: Path,
                                                   tiny_config: Callable[..., TrainConfig], workers: int) -> None:
    sequence = ArraySequence(tiny_images, {37: np.zeros((12, 12, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"train image 37 has shape \(12, 12, 3\) but train image 0 has \(16, 16, 3\)"):
        _train(sequence, tmp_path, tiny_config(epochs=1, data_workers=workers))
    assert not multiprocessing.active_children()  # an error mid-run stops the workers too


def test_auto_workers_take_the_cores_the_step_leaves_free() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_workers("auto", "cuda") == max(1, min(4, cores - 1))
    assert resolve_workers("auto", "cuda", local_processes=cores) == 1  # every GPU process keeps one
    assert resolve_workers("auto", "cpu", compute_threads=cores) == 0  # the step's threads use every core
    assert resolve_workers("auto", "cpu", compute_threads=1) == min(4, cores - 1)
    assert resolve_workers("auto", "cpu", local_processes=cores, compute_threads=1) == 0
    assert resolve_workers(3, "cpu") == 3 and resolve_workers(0, "cuda") == 0


def test_sigint_with_workers_saves_and_stops_them(tiny_images: np.ndarray, tmp_path: Path,
                                                  tiny_config: Callable[..., TrainConfig]) -> None:
    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)  # arrives during epoch 1's monitor call, workers mid-prefetch
        return {"knn_top1": 0.0}

    config = tiny_config(epochs=3, knn_every_epochs=1, checkpoint_every_epochs=0, data_workers=2)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 4"):
        _train(ArraySequence(tiny_images), tmp_path, config, knn_monitor=monitor)
    assert load_checkpoint(latest_checkpoint(tmp_path))["state"]["step"] == 4
    assert not multiprocessing.active_children()


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, None)])
def test_a_signal_to_the_whole_process_group_checkpoints_and_leaves_no_worker(
        tmp_path: Path, write_png_tree: Callable[..., Path], tiny_config: Callable[..., TrainConfig],
        signum: int, exit_code: int | None) -> None:
    """Ctrl-C and schedulers signal every process of the group: the workers must outlive it so the main process
    can finish its step and checkpoint, and then nothing may be left running."""
    root = write_png_tree(tmp_path / "pngs")
    config = tiny_config(epochs=200, checkpoint_every_steps=2, checkpoint_every_epochs=0, data_workers=2)
    run_dir = tmp_path / "run"
    code = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from edge_encoder.imagedata import FolderImages
        from edge_encoder.train.config import train_config_from_dict
        from edge_encoder.train.loop import train_moco
        images = FolderImages.open({str(root)!r}, "train", image_size=16)
        train_moco(images, train_config_from_dict({config.to_dict()!r}), {str(run_dir)!r},
                   preprocess_mean={MEAN!r}, preprocess_std={STD!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the signal goes to it and its workers
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(run_dir) is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signum)
        returncode = proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "exited unexpectedly" not in stderr, stderr[-3000:]
        if exit_code is not None:
            assert returncode == exit_code, stderr[-3000:]
        else:
            assert "KeyboardInterrupt: training interrupted at step" in stderr, stderr[-3000:]
        assert '"event": "signal"' in (run_dir / "train_log.jsonl").read_text()
        assert _group_gone(proc.pid, timeout=10), "worker processes outlived the training process"
    finally:
        if proc.poll() is None or not _group_gone(proc.pid, 0.1):
            os.killpg(proc.pid, signal.SIGKILL)
