"""The checkpoint policy of the training loop: what a checkpoint holds (``payload``, with every RNG state), when
one is written (``save_due``), writing it (``save``: rank 0 only, NaN/inf refused, the last ``keep_last`` kept)
and which one a run resumes from (``check_resume``/``resume``: the newest good one of the same config). The file
format itself (atomic writes, validation, pruning) is ``train.checkpoint``'s."""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.core.errors import InputError, NonFiniteError
from edge_encoder.train.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_path,
    checkpoint_preprocess,
    first_nonfinite,
    last_good_checkpoint,
    newest_good_checkpoint,
    plain_backbone_state,
    prune_checkpoints,
    save_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.distributed import all_reduce_sum, average_bn_buffers_, barrier
from edge_encoder.train.state import Run

logger = logging.getLogger(__name__)

# Keys that do not change the training trajectory: a resumed run may change them.
RESUME_FREE_KEYS = {"checkpoint_every_steps", "checkpoint_every_epochs", "keep_last", "log_every",
                    "knn_every_epochs", "num_threads", "compile", "tensorboard", "data_workers", "channels_last"}


class NonFiniteStateError(NonFiniteError):
    """A tensor of the training state (weights, EMA key encoder, queue, batch-norm statistics, optimiser state)
    became NaN/inf while the loss was still finite; found when saving, so no checkpoint was written."""


def save_due(run: Run, epoch_end: bool, final: bool) -> bool:
    """Whether step ``run.step`` ends with a checkpoint: the last step, every ``checkpoint_every_steps`` steps,
    every ``checkpoint_every_epochs`` epochs."""
    c, step = run.config, run.step
    return bool(final or (c.checkpoint_every_steps and step % c.checkpoint_every_steps == 0)
                or (epoch_end and c.checkpoint_every_epochs
                    and (step // run.steps_per_epoch) % c.checkpoint_every_epochs == 0))


def payload(run: Run) -> dict[str, Any]:
    """What a checkpoint of ``run`` holds: the plain backbone for export, and the whole training state."""
    return {
        "format": FORMAT,
        "backbone": plain_backbone_state(run.model.backbone_q),
        "backbone_config": run.backbone_config.to_dict(),
        "preprocess": run.preprocess.to_dict(),
        "config": run.config.to_dict(),
        "state": {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),  # plain numbers ({} when disabled): weights_only-safe
            "step": run.step,
            "epoch": run.step // run.steps_per_epoch,
            "batch_in_epoch": run.step % run.steps_per_epoch,
            "rng": rng_state(run.aug_gen),
            "last_loss": run.last_loss,
            "runtime": dict(run.runtime),
        },
        "history": list(run.history),
    }


def save(run: Run) -> Path:
    """Collective under DDP: every rank calls it; rank 0 writes, the others wait at the barrier.

    Raises:
        NonFiniteStateError: a tensor of the state is NaN/inf (on any rank): nothing is written, so every
            checkpoint on disk stays good.
    """
    average_bn_buffers_(run.model, run.dist)  # the running statistics of all ranks' groups
    check_finite(run)
    path = checkpoint_path(run.run_dir, run.step)
    if run.dist.is_main:
        save_checkpoint(path, payload(run))
        prune_checkpoints(run.run_dir, run.config.keep_last)
        logger.info("saved checkpoint %s", path)
    barrier(run.dist)
    return path


def check_finite(run: Run) -> None:
    """Raise ``NonFiniteStateError`` naming the step and the first NaN/inf tensor of what a checkpoint holds
    (the model with its EMA key encoder, queue and batch-norm statistics, and the optimiser state). Only at
    saves: the per-step guard is the loss; the loss can stay finite while running statistics overflow."""
    bad = first_nonfinite({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}, "state")
    if run.dist.active:  # every rank stops alike, or the others would wait at the next collective forever
        (flagged,) = all_reduce_sum([float(bad is not None)], run.dist, run.device)
        bad = bad or ("a tensor on another rank" if flagged > 0 else None)
    if bad is not None:
        raise NonFiniteStateError(
            f"training state is not finite at step {run.step} (epoch {run.step // run.steps_per_epoch}): "
            f"{bad} holds NaN/inf while the loss was finite; no checkpoint written. Last good checkpoint: "
            f"{last_good_checkpoint(run.run_dir) or 'none yet'}. Lower train.base_lr ({run.config.base_lr}) "
            "or add warm-up")


def rng_state(aug_gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "aug": aug_gen.get_state(),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], aug_gen: torch.Generator) -> None:
    aug_gen.set_state(state["aug"])
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def check_resume(run_dir: Path, config: TrainConfig, *, image_size: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float]) -> tuple[Path, dict[str, Any]] | None:
    """What ``train_moco(images, config, run_dir, ...)`` would resume from: ``(checkpoint path, payload)``, or
    ``None`` for a fresh start; raises where ``train_moco`` would refuse. For callers that must know before
    training starts (e.g. to write a config file only once the run directory accepts the config).

    Args:
        image_size: the side of the training images (``H`` of ``uint8 (N, H, W, 3)``).
        mean, std: the preprocessing that ``train_moco`` gets.

    Raises:
        InputError: the newest good checkpoint was made with another training config or preprocessing.
        CheckpointError: there are checkpoints but none can be resumed (see ``newest_good_checkpoint``).
    """
    preprocess = Preprocess(config.image_size or int(image_size), mean, std)
    return resume_source(Path(run_dir), config, preprocess)


def resume_source(run_dir: Path, config: TrainConfig, preprocess: Preprocess) -> tuple[Path, dict[str, Any]] | None:
    """``(path, payload)`` of the newest good checkpoint of ``run_dir`` if it was made with ``config`` (but for
    ``RESUME_FREE_KEYS``) and ``preprocess``; ``None`` when there is none. Raises ``InputError`` otherwise."""
    found = newest_good_checkpoint(run_dir)  # a newer unusable file is skipped with a warning, not deleted
    if found is None:
        return None
    path, payload = found
    # keys added to TrainConfig after the checkpoint was written count as their defaults
    saved, now = {**TrainConfig().to_dict(), **payload["config"]}, config.to_dict()
    differing = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if differing:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differing)
        raise InputError(f"run directory {run_dir} holds a checkpoint ({path.name}) from a different training "
                         f"config ({changes}); use another run directory or delete {path.parent}")
    saved_preprocess = checkpoint_preprocess(payload, path)
    if saved_preprocess != preprocess:
        raise InputError(f"{path}: preprocess {saved_preprocess.to_dict()} differs from this run's "
                         f"{preprocess.to_dict()}")
    return path, payload


def resume(run: Run) -> int | None:
    """Restore the newest good checkpoint of the run directory, if any. Refuses one made with another config."""
    found = resume_source(run.run_dir, run.config, run.preprocess)
    if found is None:
        return None
    path, payload = found
    state = payload["state"]
    with _naming_entry(path, "state.model"):
        run.model.load_state_dict(state["model"])
    with _naming_entry(path, "state.optimizer"):
        run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        with _naming_entry(path, "state.scaler"):
            run.scaler.load_state_dict(state["scaler"])  # a no-op for a disabled scaler
    elif run.scaler.is_enabled():  # a checkpoint from a bf16/fp32 machine (or an older one): a fresh loss scale
        logger.info("%s holds no GradScaler state; fp16 loss scaling starts afresh", path.name)
    with _naming_entry(path, "state.rng"):
        set_rng_state(state["rng"], run.aug_gen)
    run.step, run.history, run.last_loss = int(state["step"]), list(payload.get("history", [])), state["last_loss"]
    run.resumed_path = path
    logger.info("resumed from %s at step %d", path, run.step)
    return run.step


@contextlib.contextmanager
def _naming_entry(path: Path, entry: str) -> Iterator[None]:
    """Restoring entry ``entry`` of checkpoint ``path``: torch's errors for a malformed entry become one
    ``CheckpointError`` naming the file and the entry (the file passed ``check_training_state``, so what fails
    here is its content, e.g. tensors of other shapes)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"{path}: entry '{entry}' cannot be restored: {exc}") from exc
