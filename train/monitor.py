"""Watching a training run: the JSON-lines log (mirrored to TensorBoard), the throughput meter, the progress bar,
the per-step and per-epoch records and the kNN monitor. Rank 0 writes; nothing here changes the trajectory."""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from edge_encoder.core.files import append_text
from edge_encoder.train.distributed import average_bn_buffers_, barrier
from edge_encoder.train.state import Run
from torch import nn

# The log events whose numbers also go to TensorBoard, and their tag prefix.
TB_EVENTS = {"step": "train", "knn": "knn"}


def log(run: Run, record: dict[str, Any]) -> None:
    """Append ``record`` to ``run_dir/train_log.jsonl`` (rank 0), its numbers to TensorBoard where open."""
    if not run.dist.is_main:
        return
    append_text(run.run_dir / "train_log.jsonl", json.dumps(record) + "\n")  # a whole line or nothing
    if run.tb is not None and record.get("event") in TB_EVENTS:
        prefix = TB_EVENTS[record["event"]]
        for key, value in record.items():
            if key not in ("event", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                run.tb.add_scalar(f"{prefix}/{key}", value, global_step=record["step"])


def close(run: Run) -> None:
    """Flush and close the TensorBoard writer, if any."""
    if run.tb is not None:
        run.tb.close()
        run.tb = None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class Meter:
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


def progress_bar(progress: bool, run: Run) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=run.step, disable=not progress, desc="moco", unit="step",
                dynamic_ncols=True)


def log_step(run: Run, window: list[float], lr: float, m: float, meter: Meter, bar: Any, stop: int) -> None:
    """Every ``log_every`` steps and at ``stop``: the mean loss of the steps since the last record."""
    step = run.step
    if step % run.config.log_every == 0 or step == stop:
        ips = meter.images_per_s
        record = {"event": "step", "step": step, "epoch": step / run.steps_per_epoch,
                  "loss": sum(window) / len(window), "lr": lr, "momentum": m, "images_per_s": ips,
                  "data_wait_frac": meter.data_wait_frac, "fetch_wait_frac": meter.fetch_wait_frac,
                  "peak_mem_mb": peak_memory_mb(run.device)}
        log(run, record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{ips:.0f}")
        window.clear()


def end_epoch(run: Run, lr: float, meter: Meter, monitor: Callable[[nn.Module], dict[str, float]] | None) -> None:
    """At an epoch boundary: the epoch record into history and the log, then the kNN monitor when it is due."""
    c, step = run.config, run.step
    epoch = step // run.steps_per_epoch
    summary = {"event": "epoch", "epoch": epoch, "step": step, "loss": run.last_loss, "lr": lr,
               "images_per_s": meter.images_per_s, "seconds": meter.train_s}
    run.history.append(summary)
    log(run, summary)
    if monitor is not None and ((c.knn_every_epochs and epoch % c.knn_every_epochs == 0) or step == run.total_steps):
        call_monitor(run, monitor, epoch)


def call_monitor(run: Run, monitor: Callable[[nn.Module], dict[str, float]], epoch: int) -> None:
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
    log(run, record)
