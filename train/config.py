"""Training configuration: one flat, frozen dataclass, validated on construction.

Configuration stops here: ``loop.train_moco`` reads a ``TrainConfig`` and hands plain arguments to the
builders (backbone, MoCo module, augmentation, optimiser). ``train_config_from_dict`` is the entry point for
user input (TOML files, command-line overrides) and turns every mistake into a ``ValueError`` naming the key.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

METHODS = ("moco_v1", "moco_v2", "moco_v3")
QUEUE_METHODS = ("moco_v1", "moco_v2")
OPTIMIZERS = ("sgd", "lars", "adamw")
MOMENTUM_SCHEDULES = ("constant", "cosine")
DDP_BN = ("shuffle", "sync")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a MoCo run. Defaults are MoCo v2 scaled to a CPU-sized ResNet-18 on 32 px images.

    Learning rate follows the linear scaling rule: ``lr = base_lr * batch_size / 256``.
    ``image_size = 0`` trains at the images' own resolution. ``crop_size`` is the side of the augmented training
    views (0 = ``image_size``): random-resized crops rendered smaller than the engine's input cost fewer FLOPs per
    step, and testing at a higher resolution than the crops were trained at is known to be no loss (FixRes). ``proj_hidden_dim = 0`` / ``pred_hidden_dim = 0``
    use the backbone's feature width. ``split_bn_groups = 1`` is plain batch norm (no shuffle-BN emulation).
    ``bf16`` is ``"auto"`` (on where the device computes bf16 natively), ``True`` or ``False``.
    On CUDA without native bf16, ``"auto"`` uses fp16 autocast with a GradScaler (its state is checkpointed).
    Checkpoint/monitor intervals of 0 switch that trigger off (a final checkpoint is always written).
    ``data_workers``: DataLoader worker processes decoding a streamed image source (an image sequence such as
    ``imagedata.FolderImages`` rather than an in-memory array, which stays on the device and ignores it): ``0``
    decodes in the training process; ``"auto"`` gives workers the cores the step leaves free (CUDA: all but one
    per process, 1 to 4; CPU: those beyond ``torch.get_num_threads()``, so 0 where the step uses every core, as
    workers competing with its threads slow it down). It does not change what is trained: a resume may change it.
    ``tensorboard`` mirrors the JSON-lines log's scalars to ``run_dir/tensorboard`` when the ``tensorboard`` package
    is installed (skipped silently otherwise).

    Under ``torchrun`` (several processes) ``batch_size`` is the global batch, split evenly over the processes.
    ``ddp_bn`` picks the batch norm there: ``"shuffle"`` (per-process batch norm, ``split_bn_groups`` counted over
    all processes, plus a cross-process shuffle of the key batch: the same computation as one process with
    ``split_bn_groups`` groups when the process count divides it) or ``"sync"`` (batch statistics over the whole
    global batch, no shuffle, like one process with ``split_bn_groups = 1``). One process ignores ``ddp_bn``.
    """

    # method and model
    method: str = "moco_v2"
    arch: str = "resnet18"
    width: int = 16
    stem: str = "cifar"
    image_size: int = 0
    crop_size: int = 0
    proj_hidden_dim: int = 0
    proj_dim: int = 128
    pred_hidden_dim: int = 0
    split_bn_groups: int = 8
    ddp_bn: str = "shuffle"
    # contrastive objective
    queue_size: int = 4096
    key_momentum: float = 0.99
    key_momentum_schedule: str = "constant"
    temperature: float = 0.2
    symmetric: bool = False
    # optimisation
    epochs: int = 10
    batch_size: int = 256
    base_lr: float = 0.06
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum_sgd: float = 0.9
    exclude_norm_bias_from_wd: bool = False
    lars_trust_coefficient: float = 0.001
    warmup_epochs: float = 0.0
    final_lr_ratio: float = 0.0
    # augmentation (two views, same distribution)
    crop_min_scale: float = 0.2
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    color_jitter_strength: float = 0.4
    hue_strength: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_min_size: int = 48
    solarize_prob: float = 0.0
    # speed
    bf16: str | bool = "auto"
    channels_last: bool = True
    compile: bool = False
    num_threads: int = 0
    data_workers: int | str = "auto"
    # bookkeeping
    seed: int = 0
    checkpoint_every_steps: int = 0
    checkpoint_every_epochs: int = 1
    keep_last: int = 2
    log_every: int = 20
    knn_every_epochs: int = 0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _checked_type(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        _check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{key: value}`` dict (JSON/TOML/``torch.load(weights_only=True)`` safe)."""
        return asdict(self)

    @property
    def uses_queue(self) -> bool:
        return self.method in QUEUE_METHODS


def _type_name(value: Any) -> str:
    return type(value).__name__


def _checked_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` (ints widened to float where a float is expected) or raise naming the key."""
    allowed = typing.get_args(hint) or (hint,)
    for expected in allowed:
        # bool is a subclass of int in Python, but `batch_size = true` is a mistake, not a 1.
        if expected is bool and isinstance(value, bool):
            return value
        if expected is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if expected is str and isinstance(value, str):
            return value
    expected_names = " or ".join(t.__name__ for t in allowed)
    raise ValueError(f"train config key {key!r}: expected {expected_names}, got {_type_name(value)} ({value!r})")


def _require(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"train config key {key!r}: {message}, got {value!r}")


def _check_ranges(c: TrainConfig) -> None:
    _require(c.method in METHODS, "method", f"must be one of {list(METHODS)}", c.method)
    _require(c.optimizer in OPTIMIZERS, "optimizer", f"must be one of {list(OPTIMIZERS)}", c.optimizer)
    _require(c.key_momentum_schedule in MOMENTUM_SCHEDULES, "key_momentum_schedule",
             f"must be one of {list(MOMENTUM_SCHEDULES)}", c.key_momentum_schedule)
    _require(c.bf16 in ("auto", True, False), "bf16", "must be 'auto', true or false", c.bf16)
    _require(c.width >= 1, "width", "must be >= 1", c.width)
    _require(c.image_size == 0 or c.image_size >= 8, "image_size", "must be 0 (native) or >= 8", c.image_size)
    _require(c.crop_size == 0 or c.crop_size >= 8, "crop_size", "must be 0 (= image_size) or >= 8", c.crop_size)
    _require(c.proj_hidden_dim >= 0, "proj_hidden_dim", "must be >= 0 (0 = backbone width)", c.proj_hidden_dim)
    _require(c.pred_hidden_dim >= 0, "pred_hidden_dim", "must be >= 0 (0 = backbone width)", c.pred_hidden_dim)
    _require(c.proj_dim >= 1, "proj_dim", "must be >= 1", c.proj_dim)
    _require(c.split_bn_groups >= 1, "split_bn_groups", "must be >= 1 (1 = plain batch norm)", c.split_bn_groups)
    _require(c.ddp_bn in DDP_BN, "ddp_bn", f"must be one of {list(DDP_BN)}", c.ddp_bn)
    if c.uses_queue:
        _require(c.queue_size >= 1, "queue_size", f"must be >= 1 for {c.method}", c.queue_size)
    _require(0.0 <= c.key_momentum <= 1.0, "key_momentum", "must lie in [0, 1]", c.key_momentum)
    _require(c.temperature > 0.0, "temperature", "must be > 0", c.temperature)
    _require(c.epochs >= 1, "epochs", "must be >= 1", c.epochs)
    _require(c.batch_size >= 2, "batch_size", "must be >= 2 (batch norm and the contrastive loss need pairs)", c.batch_size)
    _require(c.base_lr > 0.0, "base_lr", "must be > 0", c.base_lr)
    _require(c.weight_decay >= 0.0, "weight_decay", "must be >= 0", c.weight_decay)
    _require(0.0 <= c.momentum_sgd < 1.0, "momentum_sgd", "must lie in [0, 1)", c.momentum_sgd)
    _require(c.lars_trust_coefficient > 0.0, "lars_trust_coefficient", "must be > 0", c.lars_trust_coefficient)
    _require(0.0 <= c.warmup_epochs <= c.epochs, "warmup_epochs", f"must lie in [0, epochs={c.epochs}]", c.warmup_epochs)
    _require(0.0 <= c.final_lr_ratio <= 1.0, "final_lr_ratio", "must lie in [0, 1]", c.final_lr_ratio)
    _require(0.0 < c.crop_min_scale <= 1.0, "crop_min_scale", "must lie in (0, 1]", c.crop_min_scale)
    for key in ("flip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
        _require(0.0 <= getattr(c, key) <= 1.0, key, "is a probability and must lie in [0, 1]", getattr(c, key))
    _require(0.0 <= c.color_jitter_strength < 1.0, "color_jitter_strength", "must lie in [0, 1)", c.color_jitter_strength)
    _require(0.0 <= c.hue_strength <= 0.5, "hue_strength", "must lie in [0, 0.5]", c.hue_strength)
    _require(c.blur_min_size >= 1, "blur_min_size", "must be >= 1", c.blur_min_size)
    _require(c.num_threads >= 0, "num_threads", "must be >= 0 (0 = torch's default)", c.num_threads)
    _require(c.data_workers == "auto" or (isinstance(c.data_workers, int) and c.data_workers >= 0), "data_workers",
             "must be 'auto' or an int >= 0 (0 = decode in the training process)", c.data_workers)
    for key in ("checkpoint_every_steps", "checkpoint_every_epochs", "knn_every_epochs"):
        _require(getattr(c, key) >= 0, key, "must be >= 0 (0 = off)", getattr(c, key))
    _require(c.keep_last >= 1, "keep_last", "must be >= 1", c.keep_last)
    _require(c.log_every >= 1, "log_every", "must be >= 1", c.log_every)


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a validated ``TrainConfig`` from user input; unknown keys and bad values raise ``ValueError``."""
    if not isinstance(d, dict):
        raise TypeError(f"train config must be a dict, got {_type_name(d)}")
    _check_known_keys(d)
    return TrainConfig(**d)


def _check_known_keys(d: dict[str, Any]) -> None:
    known = [f.name for f in fields(TrainConfig)]
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown train config key {key!r}{hint}")


# The published recipes, as overrides of the defaults (the CPU-sized backbone stays the default).
PRESETS: dict[str, dict[str, Any]] = {
    # He et al. 2020: linear head, tau 0.07, K 65536, m 0.999, lr 0.03 at batch 256, wd 1e-4.
    "moco_v1": dict(method="moco_v1", temperature=0.07, queue_size=65536, key_momentum=0.999, base_lr=0.03,
                    weight_decay=1e-4, crop_min_scale=0.2, color_jitter_strength=0.4, hue_strength=0.4,
                    color_jitter_prob=1.0, blur_prob=0.0, final_lr_ratio=0.0),
    # Chen et al. 2020: MLP head, tau 0.2, aug+ (jitter 0.8, grey 0.2, blur 0.5), cosine schedule.
    "moco_v2": dict(method="moco_v2", temperature=0.2, queue_size=65536, key_momentum=0.999, base_lr=0.03,
                    weight_decay=1e-4, crop_min_scale=0.2, color_jitter_strength=0.4, hue_strength=0.1,
                    color_jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5),
    # Chen, Xie, He 2021: no queue, projector + predictor, symmetric loss x 2tau, m 0.99 -> 1 cosine, LARS.
    "moco_v3": dict(method="moco_v3", temperature=0.2, key_momentum=0.99, key_momentum_schedule="cosine",
                    symmetric=True, optimizer="lars", base_lr=0.3, weight_decay=1.5e-6, momentum_sgd=0.9,
                    proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096, warmup_epochs=1.0,
                    crop_min_scale=0.08, blur_prob=0.5, solarize_prob=0.1, split_bn_groups=1),
    # The official single-GPU CIFAR demo: K 4096, m 0.99, tau 0.1, lr 0.06 at batch 512, wd 5e-4, split BN.
    "cifar_demo": dict(method="moco_v2", width=64, stem="cifar", queue_size=4096, key_momentum=0.99,
                       temperature=0.1, batch_size=512, base_lr=0.03, weight_decay=5e-4, split_bn_groups=8,
                       symmetric=True, epochs=200, blur_prob=0.0),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """A published recipe (``PRESETS``) with optional overrides, validated like user input."""
    if name not in PRESETS:
        raise ValueError(f"unknown train preset {name!r}; choose one of {sorted(PRESETS)}")
    return train_config_from_dict({**PRESETS[name], **overrides})


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """A copy of ``config`` with some keys changed (validated)."""
    _check_known_keys(overrides)  # a clear message before replace() would raise a bare TypeError
    return replace(config, **overrides)
