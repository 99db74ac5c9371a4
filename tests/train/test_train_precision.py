"""Mixed precision choice (bf16 / fp16 + GradScaler / fp32), the scaler state in checkpoints, TensorBoard mirroring."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import edge_encoder.train.loop as loop
import numpy as np
import pytest
import torch
from edge_encoder.train.checkpoint import load_checkpoint
from edge_encoder.train.config import TrainConfig, train_config_from_dict
from edge_encoder.train.loop import resolve_precision, train_moco

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _train(images: np.ndarray, run_dir: Path, config: TrainConfig, **kw):  # noqa: ANN003, ANN202
    return train_moco(images, config, run_dir, preprocess_mean=MEAN, preprocess_std=STD, progress=False, **kw)


def _start_event(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "start"][-1]


@pytest.mark.parametrize("device_type, bf16, supported, expected", [
    ("cuda", "auto", True, "bf16"),
    ("cuda", "auto", False, "fp16"),  # e.g. V100/T4: fp16 autocast with loss scaling
    ("cpu", "auto", True, "bf16"),    # AVX512-BF16 / AMX
    ("cpu", "auto", False, "fp32"),   # no fp16 fallback off CUDA
    ("mps", "auto", False, "fp32"),
    ("cuda", True, False, "bf16"),    # an explicit setting is obeyed
    ("cpu", True, False, "bf16"),
    ("cuda", False, True, "fp32"),
    ("cuda", False, False, "fp32"),   # bf16 = false never turns into fp16
    ("cpu", False, True, "fp32"),
])
def test_resolve_precision(device_type: str, bf16: str | bool, supported: bool, expected: str) -> None:
    assert resolve_precision(device_type, bf16, supported) == expected


def test_resolve_bf16_agrees_with_resolve_precision_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert loop.resolve_bf16(True, cpu) and not loop.resolve_bf16(False, cpu)
    assert loop.resolve_bf16("auto", cpu) == loop.bf16_native(cpu)


def test_disabled_scaler_state_is_checkpointed_and_resume_stays_bit_exact(
        tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=1, bf16=False, checkpoint_every_epochs=0)
    straight = _train(tiny_images, tmp_path / "straight", config)
    _train(tiny_images, tmp_path / "resumed", config, stop_at_step=2)
    resumed = _train(tiny_images, tmp_path / "resumed", config)
    assert resumed.resumed_from_step == 2
    a, b = load_checkpoint(straight.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    assert a["state"]["scaler"] == {} and b["state"]["scaler"] == {}  # a disabled GradScaler: nothing to keep
    for key, value in a["state"]["model"].items():
        assert torch.equal(value, b["state"]["model"][key]), key
    assert straight.final_loss == resumed.final_loss
    start = _start_event(tmp_path / "resumed")
    assert start["precision"] == "fp32" and start["bf16"] is False


# What a torch without CPU fp16 training raises: no ``torch.amp.GradScaler`` (before 2.3: AttributeError), a CPU
# autocast that takes bfloat16 only, or no Half kernel for the matmul / the scaler's unscale. Anything else is a bug
# and fails the collection instead of skipping the test.
_NO_CPU_FP16 = re.compile(r"not implemented for 'Half'|only supports? (dtype of )?(torch\.)?bfloat16", re.IGNORECASE)


def _cpu_fp16_works() -> bool:
    try:
        grad_scaler = torch.amp.GradScaler
    except AttributeError:  # torch < 2.3: no device-generic GradScaler, so no CPU one
        return False
    try:
        scaler = grad_scaler("cpu", enabled=True)
        w = torch.nn.Parameter(torch.ones(2, 2))
        opt = torch.optim.SGD([w], lr=0.1)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = (w @ w).float().sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return True
    except (RuntimeError, NotImplementedError) as exc:
        if _NO_CPU_FP16.search(str(exc)):
            return False
        raise


@pytest.mark.parametrize(("error", "works"), [
    (RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'"), False),
    (RuntimeError("CPU Autocast only supports dtype of torch.bfloat16 currently."), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x2 and 3x3)"), None),
    (ValueError("a bug"), None),
])
def test_only_a_missing_fp16_kernel_skips_the_fp16_test(monkeypatch: pytest.MonkeyPatch, error: Exception,
                                                        works: bool | None) -> None:
    """The probe behind the skip below says "no fp16 here" for that alone; any other error propagates (fails)."""
    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(torch, "autocast", broken)
    if works is None:
        with pytest.raises(type(error)):
            _cpu_fp16_works()
    else:
        assert _cpu_fp16_works() is works


@pytest.mark.skipif(not _cpu_fp16_works(), reason="this torch has no CPU fp16 autocast/GradScaler")
def test_fp16_scaler_state_round_trips_through_a_resume(
        tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA fp16 path, exercised on CPU: an enabled GradScaler's state is saved, restored, and resume is exact."""
    monkeypatch.setattr(loop, "resolve_precision", lambda device_type, bf16, supported: "fp16")
    config = tiny_config(epochs=1, checkpoint_every_epochs=0, split_bn_groups=1)
    straight = _train(tiny_images, tmp_path / "straight", config)
    first = _train(tiny_images, tmp_path / "resumed", config, stop_at_step=2)
    mid = load_checkpoint(first.checkpoint_path)["state"]["scaler"]  # weights_only loading accepts it
    assert mid["scale"] > 0 and set(mid) >= {"scale", "growth_factor", "backoff_factor", "growth_interval",
                                              "_growth_tracker"}
    restored = {}
    real_resume = loop._resume

    def spy(run: loop._Run) -> int | None:
        step = real_resume(run)
        restored.update(run.scaler.state_dict())
        return step

    monkeypatch.setattr(loop, "_resume", spy)
    resumed = _train(tiny_images, tmp_path / "resumed", config)
    assert resumed.resumed_from_step == 2 and restored == mid
    a, b = load_checkpoint(straight.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    assert a["state"]["scaler"] == b["state"]["scaler"]
    for key, value in a["state"]["model"].items():
        assert torch.equal(value, b["state"]["model"][key]), key
    assert straight.final_loss == resumed.final_loss
    assert _start_event(tmp_path / "resumed")["precision"] == "fp16"


def test_tensorboard_key_is_validated_and_resume_free() -> None:
    assert TrainConfig().tensorboard is True
    with pytest.raises(ValueError, match=r"'train.tensorboard': expected bool, got int"):
        train_config_from_dict({"tensorboard": 1})
    assert "tensorboard" in loop._RESUME_FREE_KEYS


def _has_tensorboard() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_tensorboard(), reason="the tensorboard package is not installed")
def test_tensorboard_event_file_is_written(tiny_images: np.ndarray, tmp_path: Path,
                                           tiny_config: Callable[..., TrainConfig]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tiny_images, tmp_path, tiny_config(epochs=1), knn_monitor=lambda backbone: {"knn_top1": 0.25})
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/momentum", "train/images_per_s", "train/data_wait_frac",
            "train/peak_mem_mb", "knn/knn_top1"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert acc.Scalars("knn/knn_top1")[0].value == pytest.approx(0.25)


def test_tensorboard_off_writes_nothing(tiny_images: np.ndarray, tmp_path: Path,
                                        tiny_config: Callable[..., TrainConfig]) -> None:
    _train(tiny_images, tmp_path, tiny_config(epochs=1, tensorboard=False))
    assert not (tmp_path / "tensorboard").exists()


def test_missing_tensorboard_is_skipped_with_a_debug_line(tiny_images: np.ndarray, tmp_path: Path,
                                                          tiny_config: Callable[..., TrainConfig],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    with caplog.at_level("DEBUG", logger="edge_encoder.train.loop"):
        result = _train(tiny_images, tmp_path, tiny_config(epochs=1))
    assert result.steps == 4 and not (tmp_path / "tensorboard").exists()
    assert [r.levelname for r in caplog.records if "TensorBoard" in r.message] == ["DEBUG"]
