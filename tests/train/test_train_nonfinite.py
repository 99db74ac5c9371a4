"""Only good checkpoints: none is written with a NaN/inf tensor, the stop names the step, the tensor and the last
good checkpoint, and a resume skips a newest checkpoint that is truncated, stateless or non-finite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from edge_encoder.core.errors import InputError, NonFiniteError
from edge_encoder.train.checkpoint import (
    CheckpointError,
    first_nonfinite,
    list_checkpoints,
    load_checkpoint,
    newest_good_checkpoint,
    save_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.loop import NonFiniteStateError, check_resume, train_moco

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _train(images: np.ndarray, config: TrainConfig, run_dir: Path, **kwargs: object):
    return train_moco(images, config, run_dir, preprocess_mean=MEAN, preprocess_std=STD, progress=False, **kwargs)


def test_first_nonfinite_names_the_tensor() -> None:
    tree = {"state": {"model": {"w": torch.ones(3), "bn.running_var": torch.tensor([1.0, float("inf")])},
                      "rng": torch.zeros(4, dtype=torch.uint8), "steps": [torch.tensor(1.0)]}}
    assert first_nonfinite(tree) == "state.model.bn.running_var"
    tree["state"]["model"]["bn.running_var"][1] = 3e38  # large but finite: a max-norm cannot overflow
    assert first_nonfinite(tree) is None
    tree["state"]["steps"][0] = torch.tensor(float("nan"), dtype=torch.bfloat16)
    assert first_nonfinite(tree) == "state.steps.0"
    assert first_nonfinite({"empty": torch.zeros(0), "ints": torch.arange(3)}) is None


def test_a_non_finite_state_is_never_saved(tiny_images: np.ndarray, tiny_config: Callable[..., TrainConfig],
                                           tmp_path: Path) -> None:
    """Batch-norm running statistics overflow while the loss stays finite (the forward pass uses batch statistics):
    the loss guard cannot see it, the save must."""
    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        if len(list_checkpoints(tmp_path)) == 1:  # after epoch 1's checkpoint: poison the live running_var
            backbone.layer1[0].bn1.running_var[0] = float("inf")
        return {"knn_top1": 0.0}

    config = tiny_config(epochs=3, knn_every_epochs=1, checkpoint_every_epochs=1)
    with pytest.raises(NonFiniteStateError) as info:
        _train(tiny_images, config, tmp_path, knn_monitor=monitor)
    message = str(info.value)
    good = tmp_path / "checkpoints" / "step_000000004.pt"
    assert "at step 8" in message and "state.model.backbone_q.layer1.0.bn1.running_var holds NaN/inf" in message
    assert f"Last good checkpoint: {good}" in message and "\n" not in message
    assert list_checkpoints(tmp_path) == [good]  # nothing written at step 8
    assert first_nonfinite(load_checkpoint(good)) is None


def test_after_a_diverging_run_every_kept_checkpoint_is_finite(tiny_images: np.ndarray, tmp_path: Path,
                                                               tiny_config: Callable[..., TrainConfig]) -> None:
    """The issue's case: a huge learning rate and a checkpoint every step, keep_last=2."""
    config = tiny_config(epochs=20, base_lr=1e7, checkpoint_every_steps=1, checkpoint_every_epochs=0, keep_last=2)
    with pytest.raises(NonFiniteError) as info:
        _train(tiny_images, config, tmp_path)
    kept = list_checkpoints(tmp_path)
    assert kept and len(kept) <= 2
    for path in kept:
        assert first_nonfinite(load_checkpoint(path)) is None, path
    assert f"Last good checkpoint: {kept[-1]}" in str(info.value)


def _finished_run(images: np.ndarray, config: TrainConfig, run_dir: Path) -> dict[str, torch.Tensor]:
    """Train to the end with a checkpoint every 2 steps (kept: 3); the final model state."""
    result = _train(images, config, run_dir)
    return load_checkpoint(result.checkpoint_path)["state"]["model"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(tiny_images: np.ndarray, tmp_path: Path,
                                                                   tiny_config: Callable[..., TrainConfig],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(epochs=2, checkpoint_every_steps=2, checkpoint_every_epochs=0, keep_last=3)
    final = _finished_run(tiny_images, config, tmp_path)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn copy, a full disk...
    with caplog.at_level(logging.WARNING):
        resumed = _train(tiny_images, config, tmp_path)
    assert resumed.resumed_from_step == 6 and f"skipping checkpoint {newest} (left on disk)" in caplog.text
    again = load_checkpoint(resumed.checkpoint_path)["state"]["model"]  # step 8 rewritten by the resumed run
    assert resumed.checkpoint_path == newest and all(torch.equal(final[k], again[k]) for k in final)


def test_checkpoints_without_state_are_skipped_or_named(tiny_images: np.ndarray, tmp_path: Path,
                                                        tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=1, checkpoint_every_steps=2, checkpoint_every_epochs=0, keep_last=2)
    _finished_run(tiny_images, config, tmp_path)
    older, newest = list_checkpoints(tmp_path)
    payload = load_checkpoint(newest)
    del payload["state"]
    save_checkpoint(newest, payload)
    assert newest_good_checkpoint(tmp_path)[0] == older
    older.unlink()
    with pytest.raises(CheckpointError, match=rf"none of the 1 checkpoints .* {newest}: no training state "
                                              r"\(entry 'state' is missing\)"):
        _train(tiny_images, config, tmp_path)
    payload["state"] = {"model": {}, "optimizer": {}, "rng": {}, "last_loss": 1.0}
    save_checkpoint(newest, payload)
    with pytest.raises(CheckpointError, match=r"entry 'state' lacks \['step'\]"):
        newest_good_checkpoint(tmp_path)


def test_check_resume_refuses_another_config_before_training(tiny_images: np.ndarray, tmp_path: Path,
                                                             tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=1)
    assert check_resume(tmp_path, config, image_size=16, mean=MEAN, std=STD) is None
    _train(tiny_images, config, tmp_path)
    path, payload = check_resume(tmp_path, config, image_size=16, mean=MEAN, std=STD)
    assert path == list_checkpoints(tmp_path)[-1] and payload["state"]["step"] == 4
    with pytest.raises(InputError, match=r"from a different training config \(epochs: 1 -> 2\)"):
        check_resume(tmp_path, tiny_config(epochs=2), image_size=16, mean=MEAN, std=STD)
    with pytest.raises(InputError, match="preprocess"):
        check_resume(tmp_path, config, image_size=16, mean=MEAN, std=(0.3, 0.3, 0.3))
