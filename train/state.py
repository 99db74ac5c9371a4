"""The mutable state of one training run (``Run``), shared by the loop's parts: the step (``train.step``), data
feeding (``train.feed``), checkpoints and resume (``train.checkpointing``) and the monitor and log
(``train.monitor``). Plain data: the behaviour lives in those modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.train.backbones import BackboneConfig
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.distributed import DistContext
from edge_encoder.train.moco import MoCo


@dataclass
class Run:
    """Everything the loop mutates, bundled so helpers stay small."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    model: MoCo
    optimizer: torch.optim.Optimizer
    aug_gen: torch.Generator
    preprocess: Preprocess  # written into every checkpoint (Preprocess.to_dict)
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
    resumed_path: Path | None = None  # the checkpoint restored by train.checkpointing.resume
