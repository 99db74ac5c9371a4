"""Per-iteration schedules as pure functions of the step (no optimiser state, so resume is trivially exact)."""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): the peak learning rate is ``base_lr * batch_size / 256``."""
    return base_lr * batch_size / 256.0


def lr_at_step(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, final_ratio: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ``peak_lr / warmup_steps`` to ``peak_lr`` over the first ``warmup_steps`` steps, then a
    half cosine from ``peak_lr`` down to ``final_ratio * peak_lr`` at ``step = total_steps``.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak_lr * (final_ratio + (1.0 - final_ratio) * cosine)


def momentum_at_step(step: int, total_steps: int, base_momentum: float, schedule: str = "constant") -> float:
    """Key-encoder EMA momentum for step ``step``: constant, or a half cosine from ``base_momentum`` to 1 (MoCo v3/BYOL)."""
    if schedule == "constant":
        return base_momentum
    if schedule == "cosine":
        progress = min(1.0, step / max(1, total_steps))
        return 1.0 - (1.0 - base_momentum) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"momentum schedule {schedule!r} is unknown; choose 'constant' or 'cosine'")
