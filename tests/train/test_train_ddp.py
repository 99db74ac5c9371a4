"""DDP with 2 gloo processes on CPU equals one process on the same global batch; the gathered queue is right.

Equivalence, by construction (train/distributed.py): rank r takes the r-th block of each global batch, draws the
augmentation numbers of the whole global batch from the shared generator and keeps its rows, and gathers keys in
global order. With ``ddp_bn = "shuffle"`` per-rank batch norm plus the cross-rank key shuffle is split BN with 2
groups on one process; with ``ddp_bn = "sync"`` batch statistics span the global batch, i.e. plain batch norm on
one process. What differs is float rounding (per-rank vs whole-batch kernels, gradient all-reduce order):
TOLERANCE below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edge_encoder.train.augment import two_views
from edge_encoder.train.checkpoint import checkpoint_path, load_checkpoint
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.data import epoch_order
from edge_encoder.train.loop import _augment_params, _build_run, train_moco

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# Observed (2-core x86 CPU, torch 2.14): weights within 3e-7, BN running statistics within 6e-6 (running_var
# reaches O(1-10)), queue within 1e-6, loss within 2e-6. A wrong layout (e.g. one BN group) is off by 0.1-0.4.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)

BASE = dict(width=4, batch_size=16, epochs=1, queue_size=40, proj_dim=16, bf16=False, log_every=1, seed=3)
CASES: dict[str, dict[str, Any]] = {
    # per-rank BN + cross-rank shuffle == split BN with 2 groups + shuffle on one process
    "shuffle": dict(BASE, ddp_bn="shuffle", split_bn_groups=2),
    # global-batch BN == plain BN on one process; symmetric loss enqueues both key batches
    "sync": dict(BASE, ddp_bn="sync", split_bn_groups=1, symmetric=True),
    # MoCo v3 (no queue): in-batch negatives from the gathered key batch, BatchNorm1d heads synchronised
    "sync_v3": dict(BASE, ddp_bn="sync", split_bn_groups=1, method="moco_v3", proj_hidden_dim=32,
                    pred_hidden_dim=32, optimizer="lars", warmup_epochs=0.5),
}


def _single(images: np.ndarray, config: TrainConfig, run_dir: Path) -> dict[int, dict[str, Any]]:
    """One process: step 1, then a resume to the end; returns the checkpoints by step."""
    out = {}
    for stop in (1, None):
        result = train_moco(images, config, run_dir, preprocess_mean=MEAN, preprocess_std=STD, progress=False,
                            stop_at_step=stop)
        out[result.steps] = load_checkpoint(result.checkpoint_path)
    return out


def _first_step_keys(images: np.ndarray, config: TrainConfig, tmp: Path) -> torch.Tensor:
    """The keys of the whole first global batch in global order, computed by hand (no loop, no DDP)."""
    run = _build_run(images, config, tmp, torch.device("cpu"), MEAN, STD)
    batch = torch.from_numpy(images)[epoch_order(config.seed, 0, images.shape[0])[:config.batch_size]]
    _, v2 = two_views(batch, _augment_params(config, images.shape[1], MEAN, STD), run.aug_gen)
    v2 = v2.contiguous(memory_format=torch.channels_last)
    run.model.momentum_update(config.key_momentum)  # step 0's update, as in forward
    with torch.no_grad():
        return run.model.encode_key(v2)  # 16 x C, split BN + shuffle with the shared generator


def test_ddp_two_gloo_processes_match_one_process(tiny_images: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", tiny_images)
    streamed = {"name": "shuffle_streamed", "config": dict(CASES["shuffle"], data_workers=1), "stream": True}
    (tmp_path / "cases.json").write_text(json.dumps([{"name": n, "config": c} for n, c in CASES.items()] + [streamed]))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")  # the worker imports the installed edge_encoder, nothing from the checkout
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(tmp_path / "images.npy"), str(tmp_path / "ddp"), str(tmp_path / "cases.json")]
    # own session, so a hang kills the launcher and both workers (a timeout fails the test, never blocks CI)
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 120 s:\n{stderr[-6000:]}")
    assert proc.returncode == 0, f"torchrun failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"

    for name, overrides in CASES.items():
        config = TrainConfig(**overrides)
        ref = _single(tiny_images, config, tmp_path / "single" / name)
        last = max(ref)
        assert last == 4  # 64 images, global batch 16
        for step in (1, last):
            ddp = load_checkpoint(checkpoint_path(tmp_path / "ddp" / name, step))  # written by rank 0 only
            ranks = [torch.load(tmp_path / "ddp" / f"{name}_step{step}_rank{r}.pt", weights_only=True)
                     for r in (0, 1)]
            assert ranks[0]["world"] == 2 and ranks[0]["steps"] == step
            assert ranks[0]["resumed_from_step"] == ranks[1]["resumed_from_step"] == (1 if step == last else None)
            assert ddp["state"]["runtime"]["world_size"] == 2
            # every rank holds the same weights and the same queue
            for key, value in ranks[0]["backbone"].items():
                assert torch.equal(value, ranks[1]["backbone"][key]), (name, step, key)
            # DDP == one process on the same global batch: backbone (weights and BN statistics)
            for key, value in ref[step]["backbone"].items():
                torch.testing.assert_close(ddp["backbone"][key], value, **TOLERANCE, msg=f"{name} step {step} {key}")
            assert ddp["state"]["last_loss"] == pytest.approx(ref[step]["state"]["last_loss"], abs=1e-5, rel=1e-5)
            if config.uses_queue:
                assert torch.equal(ranks[0]["queue"], ranks[1]["queue"])
                torch.testing.assert_close(ddp["state"]["model"]["queue"], ref[step]["state"]["model"]["queue"],
                                           **TOLERANCE)
                keys_per_step = config.batch_size * (2 if config.symmetric else 1)  # the GLOBAL batch's keys
                assert int(ddp["state"]["model"]["queue_ptr"]) == (step * keys_per_step) % config.queue_size

    # Streamed through DataLoader workers on each rank: the same rows per rank, so the same run bit for bit.
    for step in (1, 4):
        a = load_checkpoint(checkpoint_path(tmp_path / "ddp" / "shuffle", step))["state"]
        b = load_checkpoint(checkpoint_path(tmp_path / "ddp" / "shuffle_streamed", step))["state"]
        assert b["runtime"]["data_workers"] == 1 and a["last_loss"] == b["last_loss"]
        assert all(torch.equal(value, b["model"][key]) for key, value in a["model"].items()), step

    for rank in (0, 1):  # the global batch must split evenly over the processes
        message = (tmp_path / "ddp" / f"odd_rank{rank}.txt").read_text()
        assert "'train.batch_size': 15 (the global batch) must be divisible by the 2 processes" in message

    # The gathered queue after step 1: the keys of the whole global batch, in global order, at rows 0..15; the
    # rest still the initial random keys.
    config = TrainConfig(**CASES["shuffle"])
    queue = load_checkpoint(checkpoint_path(tmp_path / "ddp" / "shuffle", 1))["state"]["model"]["queue"]
    expected = _first_step_keys(tiny_images, config, tmp_path / "manual")
    torch.testing.assert_close(queue[:16], expected, **TOLERANCE)
    initial = _build_run(tiny_images, config, tmp_path / "manual", torch.device("cpu"), MEAN, STD).model.queue
    assert torch.equal(queue[16:], initial[16:])


def test_ddp_refuses_a_global_batch_the_processes_do_not_divide() -> None:
    from edge_encoder.train.distributed import DistContext, per_rank_batch

    with pytest.raises(ValueError, match="'train.batch_size': 18 .* divisible by the 4 processes"):
        per_rank_batch(18, DistContext(rank=0, world=4))
    assert per_rank_batch(16, DistContext(rank=1, world=4)) == 4
    assert per_rank_batch(16, DistContext()) == 16


def test_ddp_bn_mode_is_validated() -> None:
    assert TrainConfig().ddp_bn == "shuffle"
    with pytest.raises(ValueError, match="config key 'train.ddp_bn': must be one of"):
        TrainConfig(ddp_bn="split")
