"""Training configuration: one flat, frozen dataclass, validated on construction.

Configuration stops here: ``loop.train_moco`` reads a ``TrainConfig`` and hands plain arguments to the
builders (backbone, MoCo module, augmentation, optimiser). ``train_config_from_dict`` is the entry point for
user input (TOML files, command-line overrides) and turns every mistake into a ``ValueError`` naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge_encoder.core.config import TEMPERATURE_RANGE, check_types, config_from_dict, require
from edge_encoder.train.backbones import RESNET_LAYOUTS, STEMS

METHODS = ("moco_v1", "moco_v2", "moco_v3")
QUEUE_METHODS = ("moco_v1", "moco_v2")
OPTIMIZERS = ("sgd", "lars", "adamw")
MOMENTUM_SCHEDULES = ("constant", "cosine")
DDP_BN = ("shuffle", "sync")
SECTION = "train"  # the config file section this dataclass is


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
    ``channels_last`` is ``"auto"`` (on, except on CPUs whose oneDNN runs below AVX-512 with a stride-2 1x1 conv of
    fewer than 8 input channels, i.e. width < 8 for ResNet-18/34: that weight gradient crashes there, see
    ``loop.resolve_channels_last``), ``True`` (obeyed, with a warning at that hazard) or ``False``. A memory layout,
    not a recipe: a resume may change it.
    ``compile`` (default off) runs the encoders through ``torch.compile`` (inductor), with a kernel cache per device,
    ISA and thread count (``step.isolate_compile_cache``). Off because on 2-core CPUs it did not pay: 35-60 s of
    compilation for -10 % to +20 % steady speed (``benchmarks/train_settings.py``, docs/BENCHMARKS.md).
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
    channels_last: str | bool = "auto"
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
        check_types(SECTION, self)
        _check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{key: value}`` dict (JSON/TOML/``torch.load(weights_only=True)`` safe)."""
        return asdict(self)

    @property
    def uses_queue(self) -> bool:
        return self.method in QUEUE_METHODS


def _require(ok: bool, key: str, message: str, value: Any) -> None:
    require(ok, SECTION, key, message, value)


def _check_ranges(c: TrainConfig) -> None:
    _require(c.method in METHODS, "method", f"must be one of {list(METHODS)}", c.method)
    _require(c.arch in RESNET_LAYOUTS, "arch", f"must be one of {list(RESNET_LAYOUTS)}", c.arch)
    _require(c.stem in STEMS, "stem", f"must be one of {list(STEMS)}", c.stem)
    _require(c.optimizer in OPTIMIZERS, "optimizer", f"must be one of {list(OPTIMIZERS)}", c.optimizer)
    _require(c.key_momentum_schedule in MOMENTUM_SCHEDULES, "key_momentum_schedule",
             f"must be one of {list(MOMENTUM_SCHEDULES)}", c.key_momentum_schedule)
    _require(c.bf16 in ("auto", True, False), "bf16", "must be 'auto', true or false", c.bf16)
    _require(c.channels_last in ("auto", True, False), "channels_last", "must be 'auto', true or false",
             c.channels_last)
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
    _require(TEMPERATURE_RANGE[0] <= c.temperature <= TEMPERATURE_RANGE[1], "temperature",
             f"must lie in [{TEMPERATURE_RANGE[0]}, {TEMPERATURE_RANGE[1]}] (published MoCo values: 0.07 to 1; "
             "core.config.TEMPERATURE_RANGE)", c.temperature)
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
    """Build a validated ``TrainConfig`` from user input (``core.config.config_from_dict``): unknown keys, wrong
    types and out-of-range values raise ``ValueError`` naming ``train.KEY``."""
    return config_from_dict(SECTION, TrainConfig, d)


# The published recipes, as overrides of the defaults. Each comment gives the reference values and the file they
# were read from (facebookresearch/moco at 7397dfe, facebookresearch/moco-v3 at c349e6e), then every difference
# that remains and why. Common to all four: the backbone stays the CPU-sized default (a width-16 ResNet-18 with
# the CIFAR stem; the references train a torchvision ResNet-50, the demo a ResNet-18 of width 64: set arch, width,
# stem); schedules are per step, not per epoch; the channel statistics are the dataset's own (the preprocessing
# contract), where the references use fixed ImageNet/CIFAR constants; every residual branch's last BN is
# zero-initialised (as moco-v3's ``zero_init_residual=True``; v1/v2 and the demo use torchvision's default, no
# zero-init; not configurable here). Not measured here: reproducing any of these needs a GPU (issue 10).
PRESETS: dict[str, dict[str, Any]] = {
    # MoCo v1 (He et al. 2020), moco/main_moco.py defaults + moco/builder.py: linear head (fc -> 128), tau 0.07,
    # K 65536, m 0.999, SGD lr 0.03 at batch 256 (momentum 0.9), wd 1e-4, 200 epochs, shuffle BN over 8 GPUs,
    # aug: RandomResizedCrop scale (0.2, 1), RandomGrayscale 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4) always, flip.
    # Differences: (1) lr schedule: v1 steps x0.1 at epochs 120 and 160; this project has warm-up + cosine only
    # (final_lr_ratio 0), the schedule v2 adopted ("--cos"). (2) grayscale is applied after the jitter, not before:
    # on a grey image the saturation and hue jitter are no-ops either way, brightness and contrast commute with
    # it, so the two orders give the same distribution up to the final clamp to [0, 1].
    "moco_v1": dict(method="moco_v1", temperature=0.07, queue_size=65536, key_momentum=0.999, base_lr=0.03,
                    batch_size=256, weight_decay=1e-4, momentum_sgd=0.9, epochs=200, split_bn_groups=8,
                    crop_min_scale=0.2, color_jitter_strength=0.4, hue_strength=0.4, color_jitter_prob=1.0,
                    grayscale_prob=0.2, blur_prob=0.0, final_lr_ratio=0.0),
    # MoCo v2 (Chen et al. 2020), moco/main_moco.py with README's "--mlp --moco-t 0.2 --aug-plus --cos": MLP head
    # (Linear 2048-2048, ReLU, fc -> 128, with biases), tau 0.2, K 65536, m 0.999, lr 0.03 at batch 256, wd 1e-4,
    # 200 epochs, cosine; aug+: crop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grey 0.2, Gaussian
    # blur sigma 0.1-2 p 0.5, flip. No difference beyond the common ones.
    "moco_v2": dict(method="moco_v2", temperature=0.2, queue_size=65536, key_momentum=0.999, base_lr=0.03,
                    batch_size=256, weight_decay=1e-4, momentum_sgd=0.9, epochs=200, split_bn_groups=8,
                    crop_min_scale=0.2, color_jitter_strength=0.4, hue_strength=0.1, color_jitter_prob=0.8,
                    grayscale_prob=0.2, blur_prob=0.5, final_lr_ratio=0.0),
    # MoCo v3 for ResNet (Chen, Xie, He 2021), moco-v3/main_moco.py + moco/builder.py (MoCo_ResNet) + CONFIG.md's
    # ResNet-50 100-epoch command ("--moco-m-cos --crop-min=.2"): no queue; projector 2 layers (Linear-BN-ReLU-
    # Linear-BN, hidden 4096, out 256; the 3-layer projector is MoCo_ViT's), predictor 2 layers (hidden 4096); tau
    # 1.0 (0.2 is the ViT recipe); loss = ctr(q1, k2) + ctr(q2, k1), each x 2 tau; m 0.99 cosine-increased to 1;
    # LARS (momentum 0.9, trust 0.001, no wd/adaptation for 1-d params), lr 0.6 at batch 256 (x 4096/256), wd 1e-6,
    # 10 warm-up epochs then cosine, 100 epochs, batch 4096, SyncBN; aug: crop scale (0.2, 1), ColorJitter(0.4,
    # 0.4, 0.2, 0.1) p 0.8, grey 0.2, view 1 blur p 1.0, view 2 blur p 0.1 + solarize p 0.2, flip.
    # Differences: (1) the two views share one distribution here: blur p 0.55 and solarize p 0.1, each view's
    # mean of the reference pair. (2) the jitter strength is one value for brightness, contrast and saturation:
    # saturation 0.4 instead of 0.2. (3) mixed precision is bf16 autocast (fp16 + GradScaler there); the logits
    # and loss are fp32 in both. Under torchrun, ddp_bn = "sync" is the reference's SyncBN.
    "moco_v3": dict(method="moco_v3", temperature=1.0, key_momentum=0.99, key_momentum_schedule="cosine",
                    symmetric=True, optimizer="lars", base_lr=0.6, batch_size=4096, weight_decay=1e-6,
                    momentum_sgd=0.9, lars_trust_coefficient=0.001, proj_hidden_dim=4096, proj_dim=256,
                    pred_hidden_dim=4096, warmup_epochs=10.0, epochs=100, final_lr_ratio=0.0, crop_min_scale=0.2,
                    color_jitter_strength=0.4, hue_strength=0.1, color_jitter_prob=0.8, grayscale_prob=0.2,
                    blur_prob=0.55, solarize_prob=0.1, split_bn_groups=1, ddp_bn="sync"),
    # The MoCo CIFAR-10 demo, moco/colab/moco_cifar10_demo.ipynb (f736491): ResNet-18, CIFAR stem (conv1 3x3
    # stride 1, no max-pool), width 64, no MLP head (resnet fc -> 128: this project's moco_v1 head), K 4096,
    # m 0.99, tau 0.1, split BN over 8 groups, SGD lr 0.06 at batch 512 (momentum 0.9), wd 5e-4, cosine, 200
    # epochs; aug: RandomResizedCrop(32) (torchvision's default scale (0.08, 1)), flip, ColorJitter(0.4, 0.4,
    # 0.4, 0.1) p 0.8, grey 0.2, no blur; the notebook runs the asymmetric loss (args.symmetric = False; kNN
    # top-1 82.6 at 200 epochs, its table); symmetric = true is its "Symmetric" row (85.3), the same sum of the
    # two directions. No difference beyond the common ones (kNN monitor k 200, T 0.1: the [evaluate] section).
    "cifar_demo": dict(method="moco_v1", arch="resnet18", width=64, stem="cifar", proj_dim=128, queue_size=4096,
                       key_momentum=0.99, temperature=0.1, batch_size=512, base_lr=0.03, weight_decay=5e-4,
                       momentum_sgd=0.9, split_bn_groups=8, symmetric=False, epochs=200, final_lr_ratio=0.0,
                       crop_min_scale=0.08, flip_prob=0.5, color_jitter_strength=0.4, hue_strength=0.1,
                       color_jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.0, solarize_prob=0.0),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """A published recipe (``PRESETS``) with optional overrides, validated like user input.

    Public Python API (README, "Presets and configuration"): the one way to the recipes, which the pipeline itself
    never reads (its presets are the TOML files in ``configs/``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown train preset {name!r}; choose one of {sorted(PRESETS)}")
    return train_config_from_dict({**PRESETS[name], **overrides})
