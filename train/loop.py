"""The MoCo training loop: uint8 data (device-resident, or streamed by DataLoader workers), batched augmentation,
bf16 autocast (fp16 + GradScaler where bf16 is missing on CUDA), atomic checkpoints, exact resume, a JSON-lines log
(mirrored to TensorBoard when installed).

One readable loop. Every source of randomness is an explicit, checkpointed ``torch.Generator`` (augmentation and
key shuffle) or a pure function of ``(seed, epoch)`` (the data order), so a resumed run repeats an uninterrupted
one bit for bit on CPU. Labels never reach this module.

Data: a ``uint8 (N, H, W, 3)`` ndarray is copied to the device once and indexed there; any other indexable image
sequence (e.g. ``imagedata.FolderImages``) is decoded by ``config.data_workers`` DataLoader workers
(``train.data``). Both paths take the same rows at every step (``train.data.step_rows``) and augment the uint8
batch on the device with the same code, so they train identically.

Under ``torchrun`` the same loop runs on every process (see ``train.distributed``): ``config.batch_size`` is the
global batch and each rank takes every W-th row of it, the query encoder is wrapped in DDP, keys are gathered
before they are enqueued, and only rank 0 writes checkpoints and logs. The other ranks wait at a barrier after
each save; a resume loads the checkpoint on every rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
from edge_encoder.core.errors import InputError, NonFiniteError
from edge_encoder.core.files import append_text
from edge_encoder.train.augment import AugmentParams, two_views
from edge_encoder.train.backbones import BackboneConfig
from edge_encoder.train.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_path,
    first_nonfinite,
    last_good_checkpoint,
    newest_good_checkpoint,
    plain_backbone_state,
    prune_checkpoints,
    save_checkpoint,
)
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.data import (
    ImageSequence,
    StepBatchSampler,
    StreamedBatches,
    check_sequence,
    resolve_workers,
    step_rows,
)
from edge_encoder.train.distributed import (
    DistContext,
    all_reduce_sum,
    average_bn_buffers_,
    barrier,
    convert_sync_bn,
    per_rank_batch,
    setup,
    wrap_ddp,
)
from edge_encoder.train.moco import MoCo, QueryEncoder, build_moco
from edge_encoder.train.optim import build_optimizer
from edge_encoder.train.schedule import lr_at_step, momentum_at_step, scaled_lr
from torch import nn

logger = logging.getLogger(__name__)

# Keys that do not change the training trajectory: a resumed run may change them.
_RESUME_FREE_KEYS = {"checkpoint_every_steps", "checkpoint_every_epochs", "keep_last", "log_every",
                     "knn_every_epochs", "num_threads", "compile", "tensorboard", "data_workers", "channels_last"}

# oneDNN below AVX-512 (jit_1x1:avx2 backward_weights; oneDNN 3.12 in torch 2.14) computes the weight gradient of a
# stride-2 1x1 convolution on channels_last tensors of 2..7 input channels out of bounds: glibc heap corruption
# (exit 134/139) at one thread, a hang or weight gradients off by up to 100% at two (issue 18; measured under
# ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2). 8 and more channels (also 9..14), stride 1, contiguous
# (NCHW) tensors and the AVX-512 kernel are fine. A ResNet-18/34 of width w has that conv with w input channels.
CHANNELS_LAST_MIN_CHANNELS = 8


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN/inf; training stopped before the optimiser step, checkpoints untouched."""


class NonFiniteStateError(NonFiniteError):
    """A tensor of the training state (weights, EMA key encoder, queue, batch-norm statistics, optimiser state)
    became NaN/inf while the loss was still finite; found when saving, so no checkpoint was written."""


@dataclass
class TrainResult:
    """What ``train_moco`` returns. ``checkpoint_path`` is the final checkpoint (what export/ reads)."""

    checkpoint_path: Path
    steps: int
    epochs: int
    final_loss: float
    images_per_s: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None

    def summary(self) -> dict[str, Any]:
        """The report's ``train`` entry: figures of the run plus the kNN monitor's history (best and final)."""
        monitored = [h for h in self.history if "knn_top1" in h]
        summary: dict[str, Any] = {
            "checkpoint": str(self.checkpoint_path), "steps": self.steps, "epochs": self.epochs,
            "final_loss": self.final_loss, "images_per_s": self.images_per_s, "seconds": self.seconds,
            "resumed_from_step": self.resumed_from_step, "knn_monitor": monitored,
        }
        if monitored:
            summary["knn_top1_final"] = monitored[-1]["knn_top1"]
            summary["knn_top1_best"] = max(h["knn_top1"] for h in monitored)
        return summary


def onednn_below_avx512() -> bool:
    """Whether CPU kernels run below AVX-512 here: an x86 CPU without AVX-512 (torch's ATen dispatch capability is
    not ``AVX512``), or one capped by ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA``)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if isa and isa not in ("ALL", "DEFAULT") and not isa.startswith(("AVX512", "AVX10")):
        return True
    return not torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _small_strided_1x1_channels(model: nn.Module) -> int | None:
    """The fewest input channels of a strided 1x1 convolution in ``model`` when below
    ``CHANNELS_LAST_MIN_CHANNELS``, else None."""
    small = [m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)
             and tuple(m.stride) != (1, 1) and m.in_channels < CHANNELS_LAST_MIN_CHANNELS]
    return min(small) if small else None


def resolve_channels_last(setting: str | bool, device: torch.device, model: nn.Module) -> tuple[bool, str | None]:
    """``(channels_last, hazard)``. ``hazard`` names the oneDNN crash trigger when ``model`` meets it on ``device``
    (see ``CHANNELS_LAST_MIN_CHANNELS``), else None. ``"auto"`` is on unless there is a hazard; ``True``/``False``
    are obeyed as given (the caller warns when ``True`` meets a hazard)."""
    hazard = None
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled \
            and onednn_below_avx512():
        channels = _small_strided_1x1_channels(model)
        if channels is not None:
            hazard = (f"a stride-2 1x1 conv has {channels} < {CHANNELS_LAST_MIN_CHANNELS} input channels and the CPU "
                      f"runs below AVX-512 (torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    return (hazard is None if setting == "auto" else bool(setting)), hazard


def bf16_native(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (CUDA compute capability >= 8, x86 CPUs with AVX512-BF16/AMX whose
    kernels are not capped below AVX-512, see ``onednn_below_avx512``)."""
    if device.type == "cuda":
        try:  # emulated bf16 (e.g. V100, T4) is slower than fp16: count it as missing
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the argument
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            flags = Path("/proc/cpuinfo").read_text()
            return ("avx512_bf16" in flags or "amx_bf16" in flags) and not onednn_below_avx512()
    return False


def resolve_precision(device_type: str, bf16: str | bool, bf16_supported: bool) -> str:
    """The autocast precision of a run: ``"bf16"``, ``"fp16"`` (with a GradScaler) or ``"fp32"`` (no autocast).

    ``bf16 = True``/``False`` is obeyed as given. ``"auto"`` picks bf16 where the device computes it natively,
    otherwise fp16 on CUDA (tensor cores, loss scaling against underflow) and fp32 elsewhere.
    """
    if bf16 != "auto":
        return "bf16" if bf16 else "fp32"
    if bf16_supported:
        return "bf16"
    return "fp16" if device_type == "cuda" else "fp32"


def resolve_bf16(setting: str | bool, device: torch.device) -> bool:
    """``"auto"``: bf16 where the hardware computes it natively (CUDA with bf16, x86 CPUs with AVX512-BF16/AMX)."""
    return resolve_precision(device.type, setting, bf16_native(device) if setting == "auto" else False) == "bf16"


def resolve_split_groups(groups: int, batch_size: int) -> int:
    """The largest group count <= ``groups`` that divides the batch (split BN needs equal groups)."""
    for g in range(min(groups, batch_size), 0, -1):
        if batch_size % g == 0 and batch_size // g >= 2:
            return g
    return 1


def check_train_images(images: np.ndarray | ImageSequence, config: TrainConfig) -> tuple[int, tuple[int, ...]]:
    """``(image count, (H, W, 3))`` of training images that fit ``config`` (enough images for a batch, square or
    resized), else a ``ValueError`` naming the key. An ndarray is checked whole, a sequence by its first item (the
    rest as read). ``train_moco`` calls it; a composer calls it too, to refuse a run before it writes anything."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"train images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        n, shape = images.shape[0], tuple(images.shape[1:])
    else:
        n, shape = check_sequence(images)
    if n < config.batch_size:
        raise ValueError(f"config key 'train.batch_size': {config.batch_size} is larger than the {n} training images")
    if config.image_size == 0 and shape[0] != shape[1]:
        raise ValueError(f"images are {shape[0]}x{shape[1]} (not square): set config key "
                         "'train.image_size' to the square training resolution")
    return n, shape


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class _SignalFlag:
    """Records SIGTERM/SIGINT so the loop can checkpoint at the next step boundary (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalFlag":
        if threading.current_thread() is threading.main_thread():  # signal.signal only works there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _augment_params(config: TrainConfig, size: int, mean: tuple[float, float, float],
                    std: tuple[float, float, float]) -> AugmentParams:
    s = config.color_jitter_strength
    return AugmentParams(out_size=size, mean=tuple(mean), std=tuple(std), crop_min_scale=config.crop_min_scale,
                         flip_prob=config.flip_prob, jitter_prob=config.color_jitter_prob, brightness=s, contrast=s,
                         saturation=s, hue=config.hue_strength, grayscale_prob=config.grayscale_prob,
                         blur_prob=config.blur_prob, blur_min_size=config.blur_min_size,
                         solarize_prob=config.solarize_prob)


def _rng_state(aug_gen: torch.Generator) -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any], aug_gen: torch.Generator) -> None:
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


@dataclass
class _Run:
    """Everything the loop mutates, bundled so helpers stay small."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    model: MoCo
    optimizer: torch.optim.Optimizer
    aug_gen: torch.Generator
    preprocess: dict[str, Any]
    backbone_config: BackboneConfig
    steps_per_epoch: int
    total_steps: int
    runtime: dict[str, Any]
    scaler: torch.amp.GradScaler
    item_shape: tuple[int, ...]  # (H, W, 3) of every training image
    dist: DistContext = field(default_factory=DistContext)
    tb: Any = None  # a torch.utils.tensorboard SummaryWriter on rank 0, when tensorboard is installed and enabled
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float = float("nan")
    resumed_path: Path | None = None  # the checkpoint restored by _resume

    def payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "backbone": plain_backbone_state(self.model.backbone_q),
            "backbone_config": self.backbone_config.to_dict(),
            "preprocess": dict(self.preprocess),
            "config": self.config.to_dict(),
            "state": {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),  # plain numbers ({} when disabled): weights_only-safe
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "batch_in_epoch": self.step % self.steps_per_epoch,
                "rng": _rng_state(self.aug_gen),
                "last_loss": self.last_loss,
                "runtime": dict(self.runtime),
            },
            "history": list(self.history),
        }

    def save(self) -> Path:
        """Collective under DDP: every rank calls it; rank 0 writes, the others wait at the barrier.

        Raises:
            NonFiniteStateError: a tensor of the state is NaN/inf (on any rank): nothing is written, so every
                checkpoint on disk stays good.
        """
        average_bn_buffers_(self.model, self.dist)  # the running statistics of all ranks' groups
        self.check_finite()
        path = checkpoint_path(self.run_dir, self.step)
        if self.dist.is_main:
            save_checkpoint(path, self.payload())
            prune_checkpoints(self.run_dir, self.config.keep_last)
            logger.info("saved checkpoint %s", path)
        barrier(self.dist)
        return path

    def check_finite(self) -> None:
        """Raise ``NonFiniteStateError`` naming the step and the first NaN/inf tensor of what a checkpoint holds
        (the model with its EMA key encoder, queue and batch-norm statistics, and the optimiser state). Only at
        saves: the per-step guard is the loss; the loss can stay finite while running statistics overflow."""
        bad = first_nonfinite({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, "state")
        if self.dist.active:  # every rank stops alike, or the others would wait at the next collective forever
            (flagged,) = all_reduce_sum([float(bad is not None)], self.dist, self.device)
            bad = bad or ("a tensor on another rank" if flagged > 0 else None)
        if bad is not None:
            raise NonFiniteStateError(
                f"training state is not finite at step {self.step} (epoch {self.step // self.steps_per_epoch}): "
                f"{bad} holds NaN/inf while the loss was finite; no checkpoint written. Last good checkpoint: "
                f"{last_good_checkpoint(self.run_dir) or 'none yet'}. Lower train.base_lr ({self.config.base_lr}) "
                "or add warm-up")

    def log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        append_text(self.run_dir / "train_log.jsonl", json.dumps(record) + "\n")  # a whole line or nothing
        if self.tb is not None and record.get("event") in _TB_EVENTS:
            prefix = _TB_EVENTS[record["event"]]
            for key, value in record.items():
                if key not in ("event", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{prefix}/{key}", value, global_step=record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


# The log events whose numbers also go to TensorBoard, and their tag prefix.
_TB_EVENTS = {"step": "train", "knn": "knn"}


def _open_tensorboard(run: _Run) -> None:
    """Rank 0 mirrors the log's scalars to ``run_dir/tensorboard`` when ``config.tensorboard`` and it is installed."""
    if not (run.config.tensorboard and run.dist.is_main):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # the tensorboard package is optional
        logger.debug("TensorBoard logging skipped: %s", err)
        return
    run.tb = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"))


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
    preprocess = {"image_size": config.image_size or int(image_size), "mean": [float(v) for v in mean],
                  "std": [float(v) for v in std]}
    return _resume_source(Path(run_dir), config, preprocess)


def _resume_source(run_dir: Path, config: TrainConfig, preprocess: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    found = newest_good_checkpoint(run_dir)  # a newer unusable file is skipped with a warning, not deleted
    if found is None:
        return None
    path, payload = found
    # keys added to TrainConfig after the checkpoint was written count as their defaults
    saved, now = {**TrainConfig().to_dict(), **payload["config"]}, config.to_dict()
    differing = sorted(k for k in set(saved) | set(now) if k not in _RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if differing:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differing)
        raise InputError(f"run directory {run_dir} holds a checkpoint ({path.name}) from a different training "
                         f"config ({changes}); use another run directory or delete {path.parent}")
    if payload["preprocess"] != preprocess:
        raise InputError(f"{path}: preprocess {payload['preprocess']} differs from this run's {preprocess}")
    return path, payload


def _resume(run: _Run) -> int | None:
    """Restore the newest good checkpoint of the run directory, if any. Refuses one made with another config."""
    found = _resume_source(run.run_dir, run.config, run.preprocess)
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
        _set_rng_state(state["rng"], run.aug_gen)
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


def _call_monitor(run: _Run, monitor: Callable[[nn.Module], dict[str, float]], epoch: int) -> None:
    """Rank 0 evaluates (the others wait at the barrier); its records go into its history and the log."""
    average_bn_buffers_(run.model, run.dist)
    if not run.dist.is_main:
        barrier(run.dist)
        return
    backbone = run.model.backbone_q
    backbone.eval()
    try:
        with torch.no_grad():
            metrics = monitor(backbone)
    finally:
        backbone.train()
        barrier(run.dist)
    record = {"event": "knn", "epoch": epoch, "step": run.step, **{k: float(v) for k, v in metrics.items()}}
    run.history.append(record)
    run.log(record)


def _batches(run: _Run, data: torch.Tensor, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(step, uint8 batch)`` from ``run.step`` up to ``stop``, indexing device-resident ``data``.

    Under DDP every rank computes the same global order and takes rows ``rank::world`` of each global batch:
    the ranks' samples are disjoint and together the global batch (see ``train.distributed`` for the layout)."""
    d = run.dist
    for step, rows in step_rows(run.config.seed, data.shape[0], run.config.batch_size, run.steps_per_epoch,
                                run.step, stop, data.device):
        yield step, data[rows[d.rank::d.world] if d.active else rows]


def _batch_source(run: _Run, images: np.ndarray | ImageSequence,
                  stop: int) -> ContextManager[Iterator[tuple[int, torch.Tensor]]]:
    """``with`` it: ``(step, uint8 (B, H, W, 3) batch on the device)`` for steps ``run.step..stop-1``.

    An ndarray is copied to the device once (the fast path for data that fits); a sequence is streamed by
    ``config.data_workers`` DataLoader workers, which leaving the block stops."""
    if isinstance(images, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(images)).to(run.device)  # uint8 N x H x W x 3
        return contextlib.nullcontext(_batches(run, data, stop))
    c, d = run.config, run.dist
    # nothing left to train (a finished run called again): no worker processes to start and stop
    workers = resolve_workers(c.data_workers, run.device.type, _local_processes(d)) if stop > run.step else 0
    sampler = StepBatchSampler(len(images), c.batch_size, run.steps_per_epoch, c.seed, run.step, stop, d.rank, d.world)
    run.runtime["data_workers"] = workers
    return StreamedBatches(images, run.item_shape, sampler, workers, run.device)


def _local_processes(ctx: DistContext) -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE): they share its cores for decoding."""
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world))
    except ValueError:
        return ctx.world


def _timed(batches: Iterator[tuple[int, torch.Tensor]]) -> Iterator[tuple[float, int, torch.Tensor]]:
    """``(seconds waited for the batch, step, batch)``: the wait is what the model spent idle for its data."""
    while True:
        t = time.perf_counter()
        try:
            step, batch = next(batches)
        except StopIteration:
            return
        yield time.perf_counter() - t, step, batch


def _bn_layout(config: TrainConfig, ctx: DistContext) -> tuple[int, str | None]:
    """``(split-BN groups per process, DDP batch-norm mode or None for one process)``."""
    if not ctx.active:
        return resolve_split_groups(config.split_bn_groups, config.batch_size), None
    local_batch = per_rank_batch(config.batch_size, ctx)
    if config.ddp_bn == "sync":
        if config.split_bn_groups > 1:
            logger.info("ddp_bn = 'sync': batch statistics over the global batch; split_bn_groups %d is not used",
                        config.split_bn_groups)
        return 1, "sync"
    # shuffle: split_bn_groups counts the groups of all processes together, g = split_bn_groups / W per process
    if config.split_bn_groups % ctx.world:
        logger.info("ddp_bn = 'shuffle' with split_bn_groups %d on %d processes: each process normalises its own "
                    "samples, so there are at least %d groups", config.split_bn_groups, ctx.world, ctx.world)
    return resolve_split_groups(max(1, config.split_bn_groups // ctx.world), local_batch), "shuffle"


def _build_run(images: np.ndarray | ImageSequence, config: TrainConfig, run_dir: Path, device: torch.device,
               mean: tuple[float, float, float], std: tuple[float, float, float],
               ctx: DistContext | None = None) -> _Run:
    ctx = ctx or DistContext()
    n, item_shape = check_train_images(images, config)
    size = config.image_size or item_shape[0]
    groups, ddp_bn = _bn_layout(config, ctx)
    backbone_config = BackboneConfig(arch=config.arch, width=config.width, stem=config.stem)
    aug_gen = torch.Generator(device=device).manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        model = build_moco(backbone_config, method=config.method, proj_hidden_dim=config.proj_hidden_dim,
                           proj_dim=config.proj_dim, pred_hidden_dim=config.pred_hidden_dim,
                           queue_size=config.queue_size, temperature=config.temperature, symmetric=config.symmetric,
                           split_bn_groups=groups, generator=aug_gen)
    if ddp_bn == "sync":
        model = convert_sync_bn(model, device)  # same Parameter objects, plain BatchNorm state dict keys
    channels_last, hazard = resolve_channels_last(config.channels_last, device, model)
    if hazard and ctx.is_main and config.channels_last is not False:  # an explicit false needs no word
        if channels_last:
            logger.warning("channels_last on as configured, although width %d: %s; oneDNN's AVX2 1x1-conv backward "
                           "at width < 8 crashes, hangs or computes wrong gradients there (issue 18): set "
                           "train.channels_last = \"auto\" or false", config.width, hazard)
        else:
            logger.info("channels_last off: width %d, %s (oneDNN AVX2 1x1-conv backward at width < 8 crashes; "
                        "issue 18)", config.width, hazard)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if ctx.active:
        model.shuffle_keys = ddp_bn == "shuffle"
        # No buffer sync: under 'shuffle' each rank keeps the running statistics of its own groups (averaged
        # over ranks before saves and kNN, see average_bn_buffers_), exactly like split BN.
        ddp = wrap_ddp(QueryEncoder(model.backbone_q, model.projector_q, model.predictor), device)
        model.attach_distributed(ctx, ddp)
    optimizer = build_optimizer(config.optimizer, model.query_parameters(), lr=0.0,
                                weight_decay=config.weight_decay, momentum=config.momentum_sgd,
                                exclude_norm_bias=config.exclude_norm_bias_from_wd,
                                trust_coefficient=config.lars_trust_coefficient)
    spe = n // config.batch_size  # drop_last: batch norm always sees full batches
    precision = resolve_precision(device.type, config.bf16, bf16_native(device) if config.bf16 == "auto" else False)
    runtime = {"device": str(device), "precision": precision, "bf16": precision == "bf16",
               "channels_last": channels_last, "split_bn_groups": groups,
               "steps_per_epoch": spe, "world_size": ctx.world}
    if ctx.active:
        runtime["ddp_bn"] = ddp_bn
    return _Run(config=config, run_dir=run_dir, device=device, model=model, optimizer=optimizer, aug_gen=aug_gen,
                preprocess={"image_size": size, "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
                backbone_config=backbone_config, steps_per_epoch=spe, total_steps=config.epochs * spe,
                runtime=runtime, item_shape=item_shape, dist=ctx,
                # one step code path: a disabled scaler (bf16, fp32) passes the loss and the step straight through
                scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"))


def train_moco(
    images: np.ndarray | ImageSequence,
    config: TrainConfig,
    run_dir: Path,
    *,
    device: str = "cpu",
    preprocess_mean: tuple[float, float, float],
    preprocess_std: tuple[float, float, float],
    progress: bool = True,
    knn_monitor: Callable[[nn.Module], dict[str, float]] | None = None,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Pretrain a backbone with MoCo on unlabeled images; resumes from ``run_dir``'s newest checkpoint.

    Args:
        images: ``uint8 (N, H, W, 3)`` RGB training images (never labels), copied to the device once; or any
            indexable sequence of ``uint8 (H, W, 3)`` images of one size (``len``, ``images[i]``), e.g.
            ``imagedata.FolderImages``, decoded by ``config.data_workers`` DataLoader worker processes (picklable
            where processes are spawned rather than forked). Both train identically.
        config: the resolved training config.
        run_dir: where ``checkpoints/step_*.pt`` and ``train_log.jsonl`` go.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:i"``. Under ``torchrun`` (``WORLD_SIZE`` > 1) the process
            group is joined (gloo on CPU, nccl on CUDA, where the device becomes ``cuda:LOCAL_RANK``; it stays open
            for later calls and is closed at exit); every process must call ``train_moco`` with the same
            images and config. Only rank 0 writes checkpoints and logs.
        preprocess_mean, preprocess_std: per-channel normalisation on the 0..1 scale (stored for export).
        progress: show a tqdm bar.
        knn_monitor: called every ``config.knn_every_epochs`` epochs and at the end with the query backbone in
            eval mode; its metrics go into ``history`` and the log.
        stop_at_step: stop (with a checkpoint) after this many total steps, e.g. for a time-boxed job.

    Raises:
        ValueError: bad images (for a sequence: its first item; a later bad item stops training naming it),
            a global batch the processes do not divide, or a run directory holding a checkpoint of another config.
        TypeError: ``images`` is neither an ndarray nor indexable, or its items are not ndarrays.
        CheckpointError: checkpoints exist in ``run_dir`` but none can be resumed, or one cannot be restored
            (naming the file and the entry). A newest checkpoint that is truncated, lacks its state or holds
            NaN/inf is skipped with a warning (and kept) and the next older good one is resumed.
        NonFiniteLossError: the loss became NaN/inf (the message names the step and the last good checkpoint).
        NonFiniteStateError: a tensor of the state became NaN/inf, found at a save (the message names the step,
            the tensor and the last good checkpoint); nothing non-finite is ever written.
        OSError: a checkpoint or the log cannot be written (a full disk...), naming the file.
    """
    n, _ = check_train_images(images, config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.uses_queue and config.queue_size >= n:
        logger.warning("queue_size %d >= %d training images: the queue holds several keys of the same image",
                       config.queue_size, n)
    ctx, dev = setup(torch.device(device))
    return _train(images, config, run_dir, dev, ctx, preprocess_mean, preprocess_std, progress, knn_monitor,
                  stop_at_step)


def _train(images: np.ndarray | ImageSequence, config: TrainConfig, run_dir: Path, dev: torch.device,
           ctx: DistContext, preprocess_mean: tuple[float, float, float], preprocess_std: tuple[float, float, float],
           progress: bool, knn_monitor: Callable[[nn.Module], dict[str, float]] | None,
           stop_at_step: int | None) -> TrainResult:
    run = _build_run(images, config, run_dir, dev, preprocess_mean, preprocess_std, ctx)
    resumed_from = _resume(run)
    _open_tensorboard(run)
    try:
        return _loop(run, images, resumed_from, preprocess_mean, preprocess_std, progress, knn_monitor, stop_at_step)
    finally:
        run.close()  # flushes TensorBoard events, also when training stops on an error or a signal


def _loop(run: _Run, images: np.ndarray | ImageSequence, resumed_from: int | None,
          preprocess_mean: tuple[float, float, float], preprocess_std: tuple[float, float, float], progress: bool,
          knn_monitor: Callable[[nn.Module], dict[str, float]] | None, stop_at_step: int | None) -> TrainResult:
    config, run_dir, dev, ctx = run.config, run.run_dir, run.device, run.dist
    stop = min(run.total_steps, stop_at_step if stop_at_step is not None else run.total_steps)
    source = _batch_source(run, images, stop)
    aug = _augment_params(config, config.crop_size or run.preprocess["image_size"], preprocess_mean, preprocess_std)
    if config.compile:
        _compile_encoders(run.model)
    precision = run.runtime["precision"]
    autocast = torch.autocast(dev.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16,
                              enabled=precision != "fp32")
    peak_lr = scaled_lr(config.base_lr, config.batch_size)
    warmup = round(config.warmup_epochs * run.steps_per_epoch)
    run.log({"event": "start", "step": run.step, "total_steps": run.total_steps, "resumed": resumed_from is not None,
             **run.runtime})

    final_path: Path | None = run.resumed_path if run.step >= stop else None
    meter, window = _Meter(), []
    bar = _progress_bar(progress and ctx.is_main, run)
    shard = (ctx.rank, ctx.world)
    # The signal flag first: DataLoader workers start inside it (and ignore the signals; see train.data).
    with _SignalFlag() as flag, source as batches:
        for waited, step, batch in _timed(batches):
            t0 = time.perf_counter()
            v1, v2 = two_views(batch, aug, run.aug_gen, shard)  # N x 3 x S x S each (this rank's rows)
            if run.runtime["channels_last"]:
                v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            lr = lr_at_step(step, run.total_steps, peak_lr, warmup, config.final_lr_ratio)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            m = momentum_at_step(step, run.total_steps, config.key_momentum, config.key_momentum_schedule)
            with autocast:
                loss = run.model(v1, v2, m)
            loss_value = float(loss.detach())
            signum = flag.signum
            if ctx.active:  # the global-batch loss, and whether any rank was signalled: all ranks decide alike
                loss_sum, signalled = all_reduce_sum([loss_value, float(signum is not None)], ctx, dev)
                loss_value = loss_sum / ctx.world
                signum = (signum or signal.SIGTERM) if signalled > 0 else None
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"loss is {loss_value} at step {step} (epoch {step // run.steps_per_epoch}); stopped before the "
                    f"optimiser step. Last good checkpoint: {last_good_checkpoint(run_dir) or 'none yet'}")
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
            run.scaler.update()
            t2 = time.perf_counter()
            run.step, run.last_loss = step + 1, loss_value
            meter.add(waited, t1 - t0, t2 - t0, batch.shape[0] * ctx.world)  # images of the global batch
            window.append(loss_value)
            bar.update(1)
            final_path = _after_step(run, window, lr, m, meter, bar, knn_monitor, stop) or final_path
            if not ctx.active:
                signum = flag.signum
            if signum is not None:
                path = run.save()
                run.log({"event": "signal", "signal": signum, "step": run.step, "checkpoint": str(path)})
                bar.close()
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt(f"training interrupted at step {run.step}; checkpoint {path}")
                raise SystemExit(128 + signum)
    bar.close()
    if final_path is None:  # e.g. stop_at_step hit without another trigger
        final_path = run.save()
    run.log({"event": "end", "step": run.step, "images_per_s": meter.images_per_s, "seconds": meter.train_s,
             "data_wait_frac": meter.data_wait_frac, "fetch_wait_frac": meter.fetch_wait_frac})
    return TrainResult(checkpoint_path=final_path, steps=run.step, epochs=run.step // run.steps_per_epoch,
                       final_loss=run.last_loss, images_per_s=meter.images_per_s, seconds=meter.train_s,
                       history=run.history, resumed_from_step=resumed_from)


@dataclass
class _Meter:
    """Seconds of the steps so far (monitor and checkpoint time excluded) and the images they took.

    ``fetch_s``: waiting for the next uint8 batch (a device-resident gather, or a DataLoader batch not decoded
    yet); ``data_s``: that plus augmentation, the whole input pipeline on the step's critical path."""

    train_s: float = 0.0
    data_s: float = 0.0
    fetch_s: float = 0.0
    seen: int = 0

    def add(self, fetch_s: float, augment_s: float, step_s: float, images: int) -> None:
        self.fetch_s += fetch_s
        self.data_s += fetch_s + augment_s
        self.train_s += fetch_s + step_s
        self.seen += images

    @property
    def images_per_s(self) -> float:
        return self.seen / self.train_s if self.train_s > 0 else 0.0

    @property
    def data_wait_frac(self) -> float:
        return self.data_s / max(self.train_s, 1e-9)

    @property
    def fetch_wait_frac(self) -> float:
        return self.fetch_s / max(self.train_s, 1e-9)


def _compile_encoders(model: MoCo) -> None:
    """``torch.compile`` the encoders in place (``nn.Module.compile``: state-dict keys unchanged, so checkpoints
    and export are unaffected). Only the encoders: compiling the whole step breaks autograd, because the queue
    is updated in place after the loss that will be back-propagated has read it (the clone that keeps eager
    mode correct is folded away by the compiler), and the encoders are where the FLOPs are anyway."""
    for name in ("backbone_q", "projector_q", "predictor", "backbone_k", "projector_k"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            module.compile()


def _progress_bar(progress: bool, run: _Run) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=run.step, disable=not progress, desc="moco", unit="step",
                dynamic_ncols=True)


def _after_step(run: _Run, window: list[float], lr: float, m: float, meter: _Meter, bar: Any,
                monitor: Callable[[nn.Module], dict[str, float]] | None, stop: int) -> Path | None:
    """Logging, epoch bookkeeping, kNN monitor and checkpoint triggers after step ``run.step``; returns a saved path."""
    c, step, spe = run.config, run.step, run.steps_per_epoch
    ips, train_time = meter.images_per_s, meter.train_s
    if step % c.log_every == 0 or step == stop:
        record = {"event": "step", "step": step, "epoch": step / spe, "loss": sum(window) / len(window), "lr": lr,
                  "momentum": m, "images_per_s": ips, "data_wait_frac": meter.data_wait_frac,
                  "fetch_wait_frac": meter.fetch_wait_frac, "peak_mem_mb": _peak_memory_mb(run.device)}
        run.log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{ips:.0f}")
        window.clear()
    epoch_end = step % spe == 0
    final = step == stop
    if epoch_end:
        epoch = step // spe
        summary = {"event": "epoch", "epoch": epoch, "step": step, "loss": run.last_loss, "lr": lr,
                   "images_per_s": ips, "seconds": train_time}
        run.history.append(summary)
        run.log(summary)
        if monitor is not None and ((c.knn_every_epochs and epoch % c.knn_every_epochs == 0) or step == run.total_steps):
            _call_monitor(run, monitor, epoch)
    if (final or (c.checkpoint_every_steps and step % c.checkpoint_every_steps == 0)
            or (epoch_end and c.checkpoint_every_epochs and (step // spe) % c.checkpoint_every_epochs == 0)):
        return run.save()
    return None
