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

This module sets a run up (precision, channels_last, batch-norm layout, the model) and runs the loop; its parts
live next to it: the step in ``train.step``, data feeding in ``train.feed``, the checkpoint policy and resume in
``train.checkpointing``, the log and kNN monitor in ``train.monitor``, the shared state in ``train.state``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.train.backbones import BackboneConfig
from edge_encoder.train.checkpointing import RESUME_FREE_KEYS as _RESUME_FREE_KEYS  # noqa: F401 - re-exported
from edge_encoder.train.checkpointing import NonFiniteStateError, check_resume, save, save_due
from edge_encoder.train.checkpointing import resume as _resume
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.data import ImageSequence, check_sequence
from edge_encoder.train.distributed import (
    DistContext,
    convert_sync_bn,
    per_rank_batch,
    setup,
    wrap_ddp,
)
from edge_encoder.train.feed import batch_source, timed
from edge_encoder.train.feed import batches as _batches  # noqa: F401 - re-exported
from edge_encoder.train.moco import QueryEncoder, build_moco
from edge_encoder.train.monitor import Meter, close, end_epoch, log, log_step, progress_bar
from edge_encoder.train.optim import build_optimizer
from edge_encoder.train.state import Run
from edge_encoder.train.step import (NonFiniteLossError, compile_cache_key, compile_encoders, step_plan,
                                     train_step)
from edge_encoder.train.step import augment_params as _augment_params  # noqa: F401 - re-exported
from torch import nn

__all__ = ["CHANNELS_LAST_MIN_CHANNELS", "NonFiniteLossError", "NonFiniteStateError", "TrainResult", "bf16_native",
           "check_resume", "check_train_images", "onednn_below_avx512", "resolve_bf16", "resolve_channels_last",
           "resolve_precision", "resolve_split_groups", "train_moco"]

logger = logging.getLogger(__name__)

_Run = Run  # the name tests and tools knew it by


# oneDNN below AVX-512 (jit_1x1:avx2 backward_weights; oneDNN 3.12 in torch 2.14) computes the weight gradient of a
# stride-2 1x1 convolution on channels_last tensors of 2..7 input channels out of bounds: glibc heap corruption
# (exit 134/139) at one thread, a hang or weight gradients off by up to 100% at two (issue 18; measured under
# ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2). 8 and more channels (also 9..14), stride 1, contiguous
# (NCHW) tensors and the AVX-512 kernel are fine. A ResNet-18/34 of width w has that conv with w input channels.
CHANNELS_LAST_MIN_CHANNELS = 8

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
    runtime: dict[str, Any] = field(default_factory=dict)  # the settings chosen on this machine (Run.runtime)

    def summary(self) -> dict[str, Any]:
        """The report's ``train`` entry: figures of the run plus the kNN monitor's history (best and final)."""
        monitored = [h for h in self.history if "knn_top1" in h]
        summary: dict[str, Any] = {
            "checkpoint": str(self.checkpoint_path), "steps": self.steps, "epochs": self.epochs,
            "final_loss": self.final_loss, "images_per_s": self.images_per_s, "seconds": self.seconds,
            "resumed_from_step": self.resumed_from_step, "knn_monitor": monitored, "runtime": self.runtime,
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


def cpu_runtime(device: torch.device, config: TrainConfig) -> dict[str, Any]:
    """What the report records of the machine-dependent choices besides precision and memory format: the CPU's
    instruction-set level as torch dispatches it (``AVX512``, ``AVX2``, ...; None on CUDA), the intra-op threads
    the run uses, torch.compile, and where augmentation runs (batched tensor ops in the training process)."""
    isa = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None
    threads = config.num_threads or torch.get_num_threads()
    return {"cpu_isa": isa, "threads": threads, "compile": config.compile, "augment": "batched, training process"}


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


def _open_tensorboard(run: Run) -> None:
    """Rank 0 mirrors the log's scalars to ``run_dir/tensorboard`` when ``config.tensorboard`` and it is installed."""
    if not (run.config.tensorboard and run.dist.is_main):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # the tensorboard package is optional
        logger.debug("TensorBoard logging skipped: %s", err)
        return
    run.tb = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"))


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
               ctx: DistContext | None = None) -> Run:
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
               "steps_per_epoch": spe, "world_size": ctx.world, **cpu_runtime(device, config)}
    if ctx.active:
        runtime["ddp_bn"] = ddp_bn
    return Run(config=config, run_dir=run_dir, device=device, model=model, optimizer=optimizer, aug_gen=aug_gen,
                preprocess=Preprocess(size, mean, std),
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

    ``config.num_threads`` (when set) holds for the run only: torch's intra-op thread count is restored after.

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
    if config.uses_queue and config.queue_size >= n:
        logger.warning("queue_size %d >= %d training images: the queue holds several keys of the same image",
                       config.queue_size, n)
    options = _Options(tuple(preprocess_mean), tuple(preprocess_std), progress, knn_monitor, stop_at_step)
    with torch_threads(config.num_threads):
        ctx, dev = setup(torch.device(device))
        run = _build_run(images, config, run_dir, dev, preprocess_mean, preprocess_std, ctx)
        resumed_from = _resume(run)
        _open_tensorboard(run)
        try:
            return _loop(run, images, resumed_from, options)
        finally:
            close(run)  # flushes TensorBoard events, also when training stops on an error or a signal


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Torch's intra-op thread count is ``num_threads`` inside the block (unchanged when 0/None) and what it was
    before after it, so a training stage does not leave its setting to the stages that follow."""
    if not num_threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class _Options:
    """``train_moco``'s arguments that only the loop reads."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    progress: bool
    knn_monitor: Callable[[nn.Module], dict[str, float]] | None
    stop_at_step: int | None


def _loop(run: Run, images: np.ndarray | ImageSequence, resumed_from: int | None, options: _Options) -> TrainResult:
    """Steps ``run.step`` up to the stop, each followed by logging, the monitor and the checkpoint policy."""
    stop = min(run.total_steps, options.stop_at_step if options.stop_at_step is not None else run.total_steps)
    source = batch_source(run, images, stop)
    plan = step_plan(run, options.mean, options.std)
    if run.config.compile:
        compile_encoders(run.model, compile_cache_key(run.runtime))
    if run.dist.is_main:
        r = run.runtime
        # "NHWC"/"NCHW", not the setting's name: the oneDNN hazard lines alone speak of channels_last
        logger.info("training on %s%s: %s, %s memory format, %d threads, compile %s, augmentation %s", r["device"],
                    f" ({r['cpu_isa']})" if r["cpu_isa"] else "", r["precision"],
                    "NHWC" if r["channels_last"] else "NCHW", r["threads"], r["compile"], r["augment"])
    log(run, {"event": "start", "step": run.step, "total_steps": run.total_steps, "resumed": resumed_from is not None,
              **run.runtime})
    final_path: Path | None = run.resumed_path if run.step >= stop else None
    meter, window = Meter(), []
    bar = progress_bar(options.progress and run.dist.is_main, run)
    # The signal flag first: DataLoader workers start inside it (and ignore the signals; see train.data).
    with _SignalFlag() as flag, source as batches:
        for waited, step, batch in timed(batches):
            out = train_step(run, plan, step, batch, flag)
            meter.add(waited, out.augment_s, out.step_s, batch.shape[0] * run.dist.world)  # the global batch
            window.append(out.loss)
            bar.update(1)
            final_path = _after_step(run, window, out.lr, out.momentum, meter, bar, options.knn_monitor,
                                     stop) or final_path
            signum = out.signum if run.dist.active else flag.signum
            if signum is not None:
                _stop_on_signal(run, signum, bar)
    bar.close()
    if final_path is None:  # e.g. stop_at_step hit without another trigger
        final_path = save(run)
    log(run, {"event": "end", "step": run.step, "images_per_s": meter.images_per_s, "seconds": meter.train_s,
              "data_wait_frac": meter.data_wait_frac, "fetch_wait_frac": meter.fetch_wait_frac})
    return TrainResult(checkpoint_path=final_path, steps=run.step, epochs=run.step // run.steps_per_epoch,
                       final_loss=run.last_loss, images_per_s=meter.images_per_s, seconds=meter.train_s,
                       history=run.history, resumed_from_step=resumed_from, runtime=dict(run.runtime))


def _after_step(run: Run, window: list[float], lr: float, m: float, meter: Meter, bar: Any,
                monitor: Callable[[nn.Module], dict[str, float]] | None, stop: int) -> Path | None:
    """Logging, epoch bookkeeping, kNN monitor and checkpoint triggers after step ``run.step``; returns a saved path."""
    log_step(run, window, lr, m, meter, bar, stop)
    epoch_end = run.step % run.steps_per_epoch == 0
    if epoch_end:
        end_epoch(run, lr, meter, monitor)
    return save(run) if save_due(run, epoch_end, run.step == stop) else None


def _stop_on_signal(run: Run, signum: int, bar: Any) -> None:
    """Checkpoint, log and leave: ``KeyboardInterrupt`` for SIGINT, ``SystemExit(128 + signum)`` otherwise."""
    path = save(run)
    log(run, {"event": "signal", "signal": signum, "step": run.step, "checkpoint": str(path)})
    bar.close()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt(f"training interrupted at step {run.step}; checkpoint {path}")
    raise SystemExit(128 + signum)
