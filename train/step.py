"""One MoCo training step, in one place.

    views    two augmented views of the uint8 batch (this rank's rows), on the device
    lr, m    the learning rate and the EMA momentum of this step (pure functions of the step)
    forward  ``MoCo.forward``: EMA update of the key encoder, queries of both views, keys, InfoNCE loss against
             the queue, then this step's keys enqueued (all under autocast)
    guard    the global-batch loss must be finite, else ``NonFiniteLossError`` before the optimiser step
    backward the (fp16-scaled) loss back-propagated, the optimiser step taken, the loss scale updated
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import torch
from edge_encoder.core.errors import NonFiniteError
from edge_encoder.train.augment import AugmentParams, two_views
from edge_encoder.train.checkpoint import last_good_checkpoint
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.distributed import all_reduce_sum
from edge_encoder.train.moco import MoCo
from edge_encoder.train.schedule import lr_at_step, momentum_at_step, scaled_lr
from edge_encoder.train.state import Run
from torch import nn


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN/inf; training stopped before the optimiser step, checkpoints untouched."""


@dataclass(frozen=True)
class StepPlan:
    """What every step of a run uses unchanged: augmentation, autocast, the learning-rate schedule's figures and
    this rank's share of the global batch."""

    aug: AugmentParams
    autocast: ContextManager[Any]
    peak_lr: float
    warmup: int
    shard: tuple[int, int]  # (rank, world)


@dataclass(frozen=True)
class StepOutcome:
    """The global-batch loss of a step, its lr and momentum, whether a process was signalled (under DDP, agreed
    by all ranks) and the seconds of augmentation and of the whole step."""

    loss: float
    lr: float
    momentum: float
    signum: int | None
    augment_s: float
    step_s: float


def augment_params(config: TrainConfig, size: int, mean: tuple[float, float, float],
                   std: tuple[float, float, float]) -> AugmentParams:
    s = config.color_jitter_strength
    return AugmentParams(out_size=size, mean=tuple(mean), std=tuple(std), crop_min_scale=config.crop_min_scale,
                         flip_prob=config.flip_prob, jitter_prob=config.color_jitter_prob, brightness=s, contrast=s,
                         saturation=s, hue=config.hue_strength, grayscale_prob=config.grayscale_prob,
                         blur_prob=config.blur_prob, blur_min_size=config.blur_min_size,
                         solarize_prob=config.solarize_prob)


def step_plan(run: Run, mean: tuple[float, float, float], std: tuple[float, float, float]) -> StepPlan:
    config, precision = run.config, run.runtime["precision"]
    aug = augment_params(config, config.crop_size or run.preprocess.image_size, mean, std)
    autocast = torch.autocast(run.device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16,
                              enabled=precision != "fp32")
    return StepPlan(aug=aug, autocast=autocast, peak_lr=scaled_lr(config.base_lr, config.batch_size),
                    warmup=round(config.warmup_epochs * run.steps_per_epoch), shard=(run.dist.rank, run.dist.world))


def train_step(run: Run, plan: StepPlan, step: int, batch: torch.Tensor, flag: Any) -> StepOutcome:
    """Train step ``step`` on the uint8 ``batch``; afterwards ``run.step == step + 1``. ``flag.signum`` is read
    once the loss is known (a signal recorded by the loop's handler)."""
    c, t0 = run.config, time.perf_counter()
    v1, v2 = two_views(batch, plan.aug, run.aug_gen, plan.shard)  # N x 3 x S x S each (this rank's rows)
    if run.runtime["channels_last"]:
        v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
    t1 = time.perf_counter()
    lr = lr_at_step(step, run.total_steps, plan.peak_lr, plan.warmup, c.final_lr_ratio)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    m = momentum_at_step(step, run.total_steps, c.key_momentum, c.key_momentum_schedule)
    with plan.autocast:
        loss = run.model(v1, v2, m)  # EMA update, forward of both views, loss, enqueue
    loss_value, signum = _global_loss(run, float(loss.detach()), flag.signum)
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(
            f"loss is {loss_value} at step {step} (epoch {step // run.steps_per_epoch}); stopped before the "
            f"optimiser step. Last good checkpoint: {last_good_checkpoint(run.run_dir) or 'none yet'}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
    run.scaler.update()
    t2 = time.perf_counter()
    run.step, run.last_loss = step + 1, loss_value
    return StepOutcome(loss_value, lr, m, signum, t1 - t0, t2 - t0)


def _global_loss(run: Run, loss_value: float, signum: int | None) -> tuple[float, int | None]:
    """Under DDP the global-batch loss, and whether any rank was signalled: all ranks decide alike."""
    ctx = run.dist
    if not ctx.active:
        return loss_value, signum
    loss_sum, signalled = all_reduce_sum([loss_value, float(signum is not None)], ctx, run.device)
    return loss_sum / ctx.world, (signum or signal.SIGTERM) if signalled > 0 else None


# the user's own inductor cache folder, read before torch sets the variable itself on its first compile
_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def isolate_compile_cache(machine_key: str) -> Path:
    """Point inductor's on-disk kernel cache at a subfolder for ``machine_key`` (device, ISA, threads) and return it.

    Why: with torch 2.14 on CPU, kernels cached by a run at one thread count and loaded by a run at another
    corrupted the heap (abort: "malloc(): unaligned tcache chunk detected", "corrupted size vs. prev_size"), and
    runs under another ISA cap loaded them too (NaN at step 0, SIGSEGV); a fresh cache folder ran correctly
    (docs/BENCHMARKS.md, "torch.compile on CPU"). Kept inside the user's ``TORCHINDUCTOR_CACHE_DIR`` if set."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder = Path(_USER_INDUCTOR_CACHE or default_cache_dir()) / f"edge_encoder-{machine_key}"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder


def compile_cache_key(runtime: dict[str, Any]) -> str:
    """``isolate_compile_cache``'s key for a run's ``Run.runtime``: device, ISA, oneDNN's ISA cap when set (an
    emulated ISA compiles apart from the native one) and threads, e.g. ``cpu-avx2-avx2-2t``."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    parts = [runtime["device"], runtime["cpu_isa"] or "gpu", *([cap] if cap else []), f"{runtime['threads']}t"]
    return "-".join(parts).lower()


def compile_encoders(model: MoCo, machine_key: str) -> None:
    """``torch.compile`` the encoders in place (``nn.Module.compile``: state-dict keys unchanged, so checkpoints
    and export are unaffected), with the kernel cache of ``machine_key`` (``isolate_compile_cache``). Only the
    encoders: compiling the whole step breaks autograd, because the queue is updated in place after the loss that
    will be back-propagated has read it (the clone that keeps eager mode correct is folded away by the compiler),
    and the encoders are where the FLOPs are anyway."""
    isolate_compile_cache(machine_key)
    for name in ("backbone_q", "projector_q", "predictor", "backbone_k", "projector_k"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            module.compile()
