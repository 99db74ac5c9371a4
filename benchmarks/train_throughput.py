"""Training throughput: this trainer's MoCo v2 step against a reference step built from lightly's building blocks.

Both run on the same machine in one process, with the same backbone (train.backbones ResNet-18 layout), batch,
queue size, augmentation family and data (cifar10_dev, or random uint8 images with --synthetic):

- ours: uint8 data in memory, batched two-view augmentation (train/augment.py), split BN + key shuffle,
  bf16 autocast and channels_last as the trainer's "auto" chooses them on this CPU (``train.loop``'s
  ``resolve_bf16`` / ``resolve_channels_last``), ``_foreach`` EMA — i.e. ``train.loop``'s step;
- reference: torchvision per-sample transforms (RandomResizedCrop, ColorJitter, RandomGrayscale, flip) in a
  DataLoader with one worker, lightly's ``SplitBatchNorm`` (``--split-bn`` groups, as its CIFAR-10 benchmark's
  ``num_splits=8``), ``MoCoProjectionHead``, ``NTXentLoss(memory_bank_size=K)``, ``update_momentum``,
  ``batch_shuffle``/``batch_unshuffle``, fp32.

Prints images/s, extrapolated seconds per epoch, the ratio, the seconds per step our step spends in convolutions and
the bound that puts on the ratio at equal work (``equal_work_bound`` = reference step / our convolution time: our
step with nothing but its convolutions), peak memory, the settings chosen, and the achieved
training FLOP/s against the machine's measured dense-matmul FLOP/s of the precision the step ran in (bf16 where the
trainer chose bf16, else fp32; both peaks are printed). Needs ``pip install lightly`` (its
building blocks import without its optional dependencies: ``pip install --no-deps lightly`` suffices).

Usage: python benchmarks/train_throughput.py [--steps 8] [--batch 256] [--width 16] [--threads 0] [--synthetic]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_encoder.train.augment import AugmentParams, two_views
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from edge_encoder.train.loop import resolve_bf16, resolve_channels_last
from edge_encoder.train.moco import build_moco
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


def load_images(synthetic: bool) -> np.ndarray:
    path = Path(os.environ.get("EDGE_ENCODER_CIFAR10_DEV", ROOT.parent / "shared" / "data" / "cifar10_dev.npz"))
    if synthetic or not path.is_file():
        return np.random.default_rng(0).integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8)
    return np.load(path)["x_train"]


def ours(images: np.ndarray, args: argparse.Namespace) -> tuple[float, float, float, dict[str, Any]]:
    """Seconds per step (median of args.steps after 2 warm-up steps), seconds per step inside convolutions, training
    FLOPs per step, and the settings the trainer's "auto" chose on this CPU (precision, memory format), as
    ``train.loop`` resolves them."""
    torch.manual_seed(0)
    model = build_moco(BackboneConfig(width=args.width), method="moco_v2", proj_hidden_dim=0, proj_dim=128,
                       pred_hidden_dim=0, queue_size=4096, temperature=0.2, symmetric=False,
                       split_bn_groups=args.split_bn)
    channels_last, _ = resolve_channels_last("auto", torch.device("cpu"), model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.query_parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    bf16 = resolve_bf16("auto", torch.device("cpu"))
    data = torch.from_numpy(images)
    gen = torch.Generator().manual_seed(0)
    p = AugmentParams(out_size=32, mean=MEAN, std=STD)
    order = torch.randperm(len(data), generator=gen)

    def step(i: int) -> None:
        batch = data[order[(i * args.batch) % (len(data) - args.batch):][:args.batch]]
        v1, v2 = (v.contiguous(memory_format=memory_format) for v in two_views(batch, p, gen))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(v1, v2, 0.99)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    flops = FlopCounterMode(display=False)
    with flops:
        step(0)
    settings = {"precision": "bf16" if bf16 else "fp32", "channels_last": channels_last}
    return _timed(step, args.steps), conv_seconds(step), flops.get_total_flops(), settings


def conv_seconds(step, steps: int = 3) -> float:  # noqa: ANN001
    """Seconds per step spent in convolutions (forward and backward, oneDNN), from the profiler's self time.

    At equal work both steps run the same convolutions, so ``reference step / this`` bounds the speed-up that any
    change to the rest of our step (augmentation, batch norm, copies, optimiser) could give."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(100 + i)
    micros = sum(e.self_cpu_time_total for e in prof.key_averages() if "convolution" in e.key)
    return micros / 1e6 / steps


def reference(images: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds per step of the lightly-built reference (DataLoader with per-sample torchvision transforms)."""
    import torchvision.transforms as T
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import (
        batch_shuffle,
        batch_unshuffle,
        deactivate_requires_grad,
        update_momentum,
    )
    from PIL import Image

    aug = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                     T.RandomGrayscale(p=0.2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            img = Image.fromarray(images[i])
            return aug(img), aug(img)

    loader = torch.utils.data.DataLoader(TwoViews(), batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=1, persistent_workers=True)
    torch.manual_seed(0)
    # lightly's documented CIFAR-10 MocoModel splits its batch norm in 8 (ResNetGenerator(num_splits=8), i.e.
    # lightly.models.batchnorm.SplitBatchNorm): the same --split-bn as ours, through lightly's own module
    norm_layer = None
    if args.split_bn > 1:
        from lightly.models.batchnorm import SplitBatchNorm

        norm_layer = lambda channels: SplitBatchNorm(channels, args.split_bn)  # noqa: E731
    backbone = build_backbone(BackboneConfig(width=args.width), norm_layer=norm_layer)
    head = MoCoProjectionHead(backbone.out_dim, backbone.out_dim, 128)
    backbone_k, head_k = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_k)
    deactivate_requires_grad(head_k)
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.06, momentum=0.9,
                          weight_decay=5e-4)
    batches = iter(loader)

    def step(i: int) -> None:
        x_q, x_k = next(batches)
        update_momentum(backbone, backbone_k, 0.99)
        update_momentum(head, head_k, 0.99)
        q = head(backbone(x_q))
        with torch.no_grad():
            x_k, shuffle = batch_shuffle(x_k)
            k = batch_unshuffle(head_k(backbone_k(x_k)), shuffle)
        loss = criterion(q, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(step, args.steps)


def _timed(step, steps: int) -> float:  # noqa: ANN001
    step(0)
    step(1)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i + 2)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_flops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--split-bn", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="random images instead of cifar10_dev")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images(args.synthetic)
    steps_per_epoch = len(images) // args.batch
    t_ours, t_conv, flops, settings = ours(images, args)
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_ref = reference(images, args)
    peak_bf16, peak_fp32 = matmul_flops(torch.bfloat16), matmul_flops(torch.float32)
    # Utilisation against the peak of the precision the step ran in (bf16 only where the trainer chose it).
    peak_run = peak_bf16 if settings["precision"] == "bf16" else peak_fp32
    print(json.dumps({
        "isa": torch.backends.cpu.get_cpu_capability(), "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        **settings,
        "threads": torch.get_num_threads(), "batch": args.batch, "width": args.width, "split_bn": args.split_bn,
        "ours_images_per_s": round(args.batch / t_ours, 1), "reference_images_per_s": round(args.batch / t_ref, 1),
        "ours_epoch_s": round(t_ours * steps_per_epoch, 1), "reference_epoch_s": round(t_ref * steps_per_epoch, 1),
        "speedup": round(t_ref / t_ours, 2), "ours_conv_s_per_step": round(t_conv, 3),
        "ours_conv_share": round(t_conv / t_ours, 2), "equal_work_bound": round(t_ref / t_conv, 2),
        "peak_rss_mb_after_ours": round(rss_ours),
        "train_gflop_per_step": round(flops / 1e9, 2), "achieved_gflop_s": round(flops / t_ours / 1e9, 1),
        "matmul_peak_gflop_s_bf16": round(peak_bf16 / 1e9, 1), "matmul_peak_gflop_s_fp32": round(peak_fp32 / 1e9, 1),
        f"utilisation_vs_{settings['precision']}_matmul": round(flops / t_ours / peak_run, 3),
    }))


if __name__ == "__main__":
    main()
