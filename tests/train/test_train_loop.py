import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_backbone,
    load_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.loop import NonFiniteLossError, resolve_split_groups, train_moco

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _train(images: np.ndarray, run_dir: Path, config, **kw):  # noqa: ANN001, ANN202
    return train_moco(images, config, run_dir, preprocess_mean=MEAN, preprocess_std=STD, progress=False, **kw)


def test_tiny_run_writes_a_checkpoint_that_load_backbone_reads(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    calls = []

    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        calls.append(backbone.training)
        return {"knn_top1": 0.5}

    result = _train(tiny_images, tmp_path, tiny_config(knn_every_epochs=1), knn_monitor=monitor)
    assert result.steps == 8 and result.epochs == 2 and math.isfinite(result.final_loss)
    assert result.resumed_from_step is None and result.images_per_s > 0
    assert calls == [False, False]  # every epoch, backbone in eval mode
    runtime = result.summary()["runtime"]  # the settings chosen for this machine, recorded for the report
    assert runtime["cpu_isa"] == torch.backends.cpu.get_cpu_capability() and runtime["threads"] >= 1
    assert runtime["precision"] in ("fp32", "bf16") and isinstance(runtime["channels_last"], bool)
    assert runtime["compile"] is False and runtime["augment"].startswith("batched")
    assert [h["knn_top1"] for h in result.history if h["event"] == "knn"] == [0.5, 0.5]
    backbone, preprocess, backbone_config = load_backbone(result.checkpoint_path)
    assert preprocess == Preprocess(16, MEAN, STD)
    assert backbone_config == {"arch": "resnet18", "width": 4, "stem": "cifar"}
    feats = backbone(torch.randn(3, 3, 16, 16))
    assert feats.shape == (3, 32)
    payload = load_checkpoint(result.checkpoint_path)
    # the stored form is the plain dict it always was: older code reads new checkpoints, and new code old ones
    assert payload["preprocess"] == {"image_size": 16, "mean": list(MEAN), "std": list(STD)}
    assert not any(k.startswith(("module.", "encoder_q.", "backbone_q.")) for k in payload["backbone"])
    assert payload["config"] == tiny_config(knn_every_epochs=1).to_dict()
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert any('"data_wait_frac"' in line and '"peak_mem_mb"' in line for line in log)


def test_resume_is_bit_exact(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=2, checkpoint_every_epochs=0)
    straight = _train(tiny_images, tmp_path / "straight", config)
    first = _train(tiny_images, tmp_path / "resumed", config, stop_at_step=3)  # mid-epoch
    assert first.steps == 3
    second = _train(tiny_images, tmp_path / "resumed", config)
    assert second.resumed_from_step == 3 and second.steps == 8
    a, b = load_checkpoint(straight.checkpoint_path), load_checkpoint(second.checkpoint_path)
    for key, value in a["state"]["model"].items():
        assert torch.equal(value, b["state"]["model"][key]), key
    assert torch.equal(a["state"]["model"]["queue"], b["state"]["model"]["queue"])
    assert int(a["state"]["model"]["queue_ptr"]) == int(b["state"]["model"]["queue_ptr"])
    for sa, sb in zip(a["state"]["optimizer"]["state"].values(), b["state"]["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert straight.final_loss == second.final_loss


def test_queue_persists_in_checkpoints(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    result = _train(tiny_images, tmp_path, tiny_config(epochs=1, queue_size=40))
    state = load_checkpoint(result.checkpoint_path)["state"]["model"]
    assert state["queue"].shape == (40, 16)
    assert int(state["queue_ptr"]) == (4 * 16) % 40  # 4 steps of 16 keys, wrapped
    torch.testing.assert_close(state["queue"].norm(dim=1), torch.ones(40))


def test_completed_run_returns_without_training(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    first = _train(tiny_images, tmp_path, tiny_config(epochs=1))
    again = _train(tiny_images, tmp_path, tiny_config(epochs=1, log_every=3))  # log_every may change
    assert again.resumed_from_step == 4 and again.checkpoint_path == first.checkpoint_path


def test_resume_with_a_different_config_is_refused(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    _train(tiny_images, tmp_path, tiny_config(epochs=1))
    with pytest.raises(ValueError, match=r"different training config \(temperature: 0.2 -> 0.1\)"):
        _train(tiny_images, tmp_path, tiny_config(epochs=1, temperature=0.1))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tiny_images: np.ndarray,
                                                                        tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(epochs=2, base_lr=1e30, checkpoint_every_steps=1, keep_last=100, split_bn_groups=1)
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+)") as info:
        _train(tiny_images, tmp_path, config)
    step = int(info.value.args[0].split("at step ")[1].split()[0])
    last = latest_checkpoint(tmp_path)
    assert last is not None and load_checkpoint(last)["state"]["step"] == step
    assert len(list_checkpoints(tmp_path)) == step


def test_bad_inputs_are_refused_before_training(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    with pytest.raises(ValueError, match="'train.batch_size': 128 is larger than the 64 training images"):
        _train(tiny_images, tmp_path, tiny_config(batch_size=128))
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, 3\)"):
        _train(tiny_images.astype(np.float32), tmp_path, tiny_config())
    with pytest.raises(ValueError, match="not square"):
        _train(tiny_images[:, :, :12], tmp_path, tiny_config())
    assert not list_checkpoints(tmp_path)


def test_split_groups_are_reduced_to_divide_the_batch() -> None:
    assert resolve_split_groups(8, 256) == 8
    assert resolve_split_groups(8, 12) == 6
    assert resolve_split_groups(8, 7) == 1
    assert resolve_split_groups(1, 64) == 1


@pytest.mark.parametrize("overrides", [
    dict(method="moco_v3", optimizer="lars", key_momentum_schedule="cosine", proj_hidden_dim=32, pred_hidden_dim=32,
         split_bn_groups=1, warmup_epochs=1.0),
    dict(method="moco_v1", symmetric=True, optimizer="adamw", base_lr=1e-3, exclude_norm_bias_from_wd=True),
])
def test_other_methods_train(tiny_images: np.ndarray, tmp_path: Path, tiny_config: Callable[..., TrainConfig],
                             overrides: dict) -> None:
    result = _train(tiny_images, tmp_path, tiny_config(epochs=1, **overrides))
    assert result.steps == 4 and math.isfinite(result.final_loss)
    backbone, _, _ = load_backbone(result.checkpoint_path)
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def test_compile_trains_like_eager_and_keeps_checkpoint_keys(tiny_images: np.ndarray, tmp_path: Path,
                                                              tiny_config: Callable[..., TrainConfig],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``compile = true`` goes through dynamo and AOT autograd (the in-place queue update once broke the
    backward pass there). The ``aot_eager`` backend runs exactly that machinery without C++ code generation,
    which would take minutes on 2 cores; inductor's kernels are torch's business, not ours."""
    import functools

    from edge_encoder.train import step

    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(torch.nn.Module.compile, backend="aot_eager"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # restored after the test
    monkeypatch.setattr(step, "_USER_INDUCTOR_CACHE", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    eager = _train(tiny_images, tmp_path / "eager", tiny_config(bf16=False))
    compiled = _train(tiny_images, tmp_path / "compiled", tiny_config(bf16=False, compile=True))
    # the kernel cache the run compiled into is its own: this device, ISA and thread count
    isa, threads = compiled.runtime["cpu_isa"].lower(), compiled.runtime["threads"]
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).parent == tmp_path / "inductor"
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).name.startswith(f"edge_encoder-cpu-{isa}")
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).name.endswith(f"-{threads}t")
    assert compiled.final_loss == pytest.approx(eager.final_loss, rel=1e-4)
    keys = load_checkpoint(compiled.checkpoint_path)["backbone"].keys()
    assert keys == load_checkpoint(eager.checkpoint_path)["backbone"].keys()  # no "_orig_mod." prefixes
    torch._dynamo.reset()
