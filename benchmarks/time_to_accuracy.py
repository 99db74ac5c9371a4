"""Time to accuracy: our preset against MoCo v2 built from lightly's blocks, each given the same wall-clock budgets.

What a user feels is the time to a useful encoder on their machine, against what they would otherwise run. For each
budget B (minutes) and each trainer, one training run whose schedule ends at B, then the same evaluation:

- ours: ``edge_encoder.train.loop.train_moco`` with a preset's ``[train]`` section (default ``cifar10_cpu``), its
  epochs fitted to B from the throughput of a short calibration run on the same data (the calibration is not
  counted); the run's own wall time is what the comparison uses (a run may end a little after B).
- reference: lightly's documented CIFAR-10 MoCo benchmark (docs/source/getting_started/benchmarks/
  cifar10_benchmark.py, ``MocoModel``): ``ResNetGenerator('resnet-18', num_splits=8)``, ``MoCoProjectionHead(512,
  512, 128)``, ``NTXentLoss(temperature=0.1, memory_bank_size=4096)``, key momentum 0.99 (``update_momentum``),
  ``batch_shuffle``, the symmetric loss, SGD lr 0.06 x batch/128, momentum 0.9, weight decay 5e-4, batch 128,
  cosine schedule, ``SimCLRTransform(input_size=32, gaussian_blur=0.0)`` in DataLoader workers (lightly's 8, capped
  at the CPU count) - its cosine is over the budget's wall-clock time instead of 200 epochs, so that it, too,
  ends its schedule at B. ``--reference-width 16`` gives it our backbone width instead of ResNet-18's 64.
- photo folders (``--dataset folder:PATH``, a ``train/`` + ``val/`` tree decoded once at the preset's
  ``data.image_size``, not counted; both trainers then read the same uint8 arrays): ours is ``--preset photos_cpu``,
  the reference lightly's documented Imagenette ``MocoModel`` (imagenette_benchmark.py): torchvision ResNet-18,
  ``MoCoProjectionHead(512, 2048, 128)``, the same loss, momentum and optimiser at lr 0.06 x batch/256, batch 256,
  ``SimCLRTransform(input_size=S)`` with its default blur, at the folder's size S instead of 128.
  ``--write-photo-folder DIR`` builds such a tree from the npz (bicubic upscale to ``--size``, JPEG quality 90).
- evaluation (not counted): weighted kNN top-1 on the backbone's L2-normalised features, bank = the training split
  with labels, queries = the test split, k = 200 and T = 0.1 (lightly's benchmark), through ``evaluate.knn``.

Results are appended to ``benchmarks/results/time_to_accuracy.json`` (one entry per run, with the CPU, ISA, threads
and torch version), so budgets and trainers can be run in separate sessions; ``--summary`` prints the table and, per
CPU, how much sooner ours reaches the reference's accuracy at its largest budget. Needs ``pip install --no-deps
lightly lightning-utilities``.

Recipe variants of ours (``--which ours --set train.temperature=0.2``) are recorded with their overrides and listed
apart; the "sooner" line counts the preset as shipped only.

Usage: python benchmarks/time_to_accuracy.py --which ours,reference --budgets 5,10,20 [--dataset npz:PATH]
       python benchmarks/time_to_accuracy.py --write-photo-folder DIR --size 64
       python benchmarks/time_to_accuracy.py --dataset folder:DIR --preset photos_cpu --budgets 5,10,20
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_encoder.core.errors import UsageError
from edge_encoder.core.files import atomic_write_json
from edge_encoder.evaluate.knn import knn_accuracy
from edge_encoder.export.engines import TorchEngine
from edge_encoder.imagedata.sources import load_dataset
from edge_encoder.imagedata.stats import channel_stats
from edge_encoder.settings import apply_overrides, load_config_file, preset_path
from edge_encoder.train.checkpoint import load_backbone
from edge_encoder.train.config import TrainConfig, train_config_from_dict
from edge_encoder.train.loop import train_moco

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
KNN_K, KNN_T = 200, 0.1  # lightly's cifar10_benchmark.py
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # lightly's test_transforms


def load_data(spec: str, preset: str) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` (uint8 NHWC, int64) of an npz file, or of a ``folder:PATH`` tree decoded
    at the preset's ``data.image_size``."""
    if spec.startswith("folder:"):
        size = int(load_config_file(preset_path(preset)).get("data", {}).get("image_size", 0)) or None
        splits = load_dataset(spec, image_size=size)
        return {k: getattr(splits, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    with np.load(Path(spec.removeprefix("npz:"))) as data:
        return {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def write_photo_folder(npz: Path, out: Path, size: int) -> None:
    """``out/train/<class>/*.jpg`` and ``out/val/<class>/*.jpg`` from an npz's splits, bicubic-upscaled to ``size``
    px, JPEG quality 90 (photo-like files from the data at hand); refuses an existing ``out``."""
    from PIL import Image

    if out.exists():
        raise SystemExit(f"{out} exists; give a new folder")
    with np.load(npz) as data:
        for split, x, y in (("train", data["x_train"], data["y_train"]), ("val", data["x_test"], data["y_test"])):
            for i, (image, label) in enumerate(zip(x, y)):
                folder = out / split / f"class_{int(label):02d}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).resize((size, size), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)


def machine() -> dict[str, Any]:
    """The CPU model, torch's ISA level, threads and versions of this measurement."""
    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "torch": torch.__version__,
            "python": platform.python_version()}


def knn_top1(features: Any, data: dict[str, np.ndarray]) -> float:
    """Weighted kNN top-1 (k=200, T=0.1) of ``features(images) -> (N, D)``: train split = bank, test = queries."""
    bank, queries = features(data["x_train"]), features(data["x_test"])
    return knn_accuracy(bank, data["y_train"], queries, data["y_test"], k=KNN_K, temperature=KNN_T)["top1"]


# ---------------------------------------------------------------------------------------------------- ours


def ours_config(preset: str, epochs: int, overrides: tuple[str, ...] = ()) -> TrainConfig:
    """The preset's ``[train]`` with ``train.KEY=VALUE`` ``overrides`` (a recipe variant) and ``epochs``; no kNN
    monitor and one final checkpoint (nothing else timed)."""
    config_file = apply_overrides(load_config_file(preset_path(preset)), overrides, sections=("train",))
    config = train_config_from_dict(dict(config_file["train"]))
    return replace(config, epochs=epochs, knn_every_epochs=0, checkpoint_every_epochs=epochs)


def calibrate(images: np.ndarray, config: TrainConfig, mean: list[float], std: list[float],
              steps_per_epoch: int) -> float:
    """Steady training images/s: the wall time of a 4-step and a 16-step run (each in a fresh folder, same start-up
    cost) differ by 12 steps' time; not counted in the budget."""
    times = []
    for steps in (4, 16):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            train_moco(images, replace(config, epochs=max(1, math.ceil(steps / steps_per_epoch))), Path(tmp),
                       preprocess_mean=tuple(mean), preprocess_std=tuple(std), progress=False, stop_at_step=steps)
            times.append(time.perf_counter() - started)
    return 12 * config.batch_size / max(times[1] - times[0], 1e-6)


def run_ours(data: dict[str, np.ndarray], budget_s: float, preset: str,
             overrides: tuple[str, ...] = (), fixed_epochs: int = 0) -> dict[str, Any]:
    """Calibrate the throughput, fit the epochs to ``budget_s``, train, evaluate (the preset with ``overrides``).
    ``fixed_epochs`` > 0 trains that many epochs instead (no calibration): recipe variants compared epoch for epoch,
    free of the calibration's noise on a machine whose speed drifts."""
    images = data["x_train"]
    mean, std = channel_stats(images)
    base = ours_config(preset, 1, overrides)
    steps_per_epoch = len(images) // base.batch_size
    images_per_s = calibrate(images, base, mean, std, steps_per_epoch) if not fixed_epochs else 0.0
    epochs = fixed_epochs or max(1, int(budget_s * images_per_s * 0.97 / (steps_per_epoch * base.batch_size)))
    config = ours_config(preset, epochs, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train_moco(images, config, Path(tmp), preprocess_mean=tuple(mean), preprocess_std=tuple(std),
                            progress=False)
        seconds = time.perf_counter() - started
        backbone, preprocess, _ = load_backbone(result.checkpoint_path)
    with TorchEngine(backbone, preprocess, name="ours") as engine:
        top1 = knn_top1(engine.embed, data)
    return {"trainer": "ours", "preset": preset, "overrides": list(overrides), "epochs": epochs, "steps": result.steps,
            "calibrated_images_per_s": round(images_per_s, 1), "train_s": round(seconds, 1),
            "images_per_s": round(result.steps * config.batch_size / seconds, 1), "knn_top1": round(top1, 4),
            "config": {k: getattr(config, k) for k in ("arch", "width", "stem", "crop_size", "batch_size", "base_lr",
                                                      "queue_size", "temperature", "method", "channels_last", "bf16",
                                                      "crop_min_scale", "key_momentum", "symmetric", "weight_decay")}}


# ---------------------------------------------------------------------------------------------------- reference


class TwoViews(torch.utils.data.Dataset):
    """Two transformed views of each uint8 image, as lightly's ``LightlyDataset`` + ``SimCLRTransform`` give."""

    def __init__(self, images: np.ndarray, transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        first, second = self.transform(Image.fromarray(self.images[index]))
        return first, second


def reference_model(width: int, photos: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """lightly's ``MocoModel`` backbone and projection head: for CIFAR-10 its ResNet-18 with split BN 8 (``width`` 64
    is ResNet-18) and head (512, 512, 128); for photos (Imagenette) torchvision's ResNet-18 and head (512, 2048, 128)."""
    import torch.nn as nn
    import torchvision
    from lightly.models import ResNetGenerator
    from lightly.models.modules import MoCoProjectionHead

    if photos:
        resnet = torchvision.models.resnet18()
        backbone = nn.Sequential(*list(resnet.children())[:-1], nn.Flatten(1))
        return backbone, MoCoProjectionHead(512, 2048, 128)
    resnet = ResNetGenerator("resnet-18", width=width / 64, num_splits=8)
    backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    with torch.no_grad():
        dim = backbone.eval()(torch.zeros(8, 3, 32, 32)).shape[1]
    return backbone, MoCoProjectionHead(dim, dim, 128)


def run_reference(data: dict[str, np.ndarray], budget_s: float, width: int, workers: int) -> dict[str, Any]:
    """lightly's MoCo benchmark model and recipe (CIFAR-10's for 32 px, Imagenette's for larger photos), trained for
    ``budget_s`` (cosine over the budget)."""
    from lightly.loss import NTXentLoss
    from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    size = data["x_train"].shape[1]
    photos = size > 32
    # cifar10_benchmark.py: batch 128, lr 0.06 x batch/128, no blur; imagenette_benchmark.py: batch 256, lr 0.06 x
    # batch/256, SimCLRTransform's default blur
    batch_size = 256 if photos else 128
    base_lr = 0.06 * batch_size / (256 if photos else 128)
    transform = SimCLRTransform(input_size=size) if photos else SimCLRTransform(input_size=32, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(TwoViews(data["x_train"], transform), batch_size=batch_size, shuffle=True,
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    backbone, head = reference_model(width, photos)
    backbone_k, head_k = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_k)
    deactivate_requires_grad(head_k)
    criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))  # lightly >= 1.5 wants (size, dim)
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=base_lr, momentum=0.9,
                          weight_decay=5e-4)

    def step(x_q: torch.Tensor, x_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = head(backbone(x_q))
        with torch.no_grad():
            x_k, shuffle = batch_shuffle(x_k)
            k = batch_unshuffle(head_k(backbone_k(x_k)), shuffle)
        return q, k

    steps, started = 0, time.perf_counter()
    backbone.train()
    head.train()
    while time.perf_counter() - started < budget_s:
        for x0, x1 in loader:
            elapsed = time.perf_counter() - started
            if elapsed >= budget_s:
                break
            for group in opt.param_groups:  # cosine to zero at the budget (lightly: CosineAnnealingLR per epoch)
                group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s))
            update_momentum(backbone, backbone_k, 0.99)
            update_momentum(head, head_k, 0.99)
            loss = 0.5 * (criterion(*step(x0, x1)) + criterion(*step(x1, x0)))  # lightly's symmetric loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - started
    backbone.eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), 512):
                x = torch.from_numpy(images[start:start + 512]).permute(0, 3, 1, 2).float().div(255)
                out.append(torch.nn.functional.normalize(backbone((x - mean) / std), dim=1).numpy())
        return np.concatenate(out)

    top1 = knn_top1(features, data)
    return {"trainer": "reference", "recipe": "imagenette" if photos else "cifar10",
            "width": 64 if photos else width, "workers": workers, "batch_size": batch_size, "steps": steps,
            "epochs": round(steps * batch_size / len(data["x_train"]), 2), "train_s": round(seconds, 1),
            "images_per_s": round(steps * batch_size / seconds, 1), "knn_top1": round(top1, 4)}


# ---------------------------------------------------------------------------------------------------- results


def append_result(entry: dict[str, Any], path: Path = RESULTS) -> None:
    """Add ``entry`` to the results file (a JSON list), written whole to a temporary file and renamed."""
    entries = json.loads(path.read_text()) if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, [*entries, entry])


def summary(path: Path = RESULTS) -> str:
    """Per CPU/ISA and dataset: kNN top-1 of each trainer at each budget, and how much sooner ours reaches the
    reference's accuracy at its largest budget (the smallest budget of ours at or above it)."""
    entries = json.loads(path.read_text()) if path.is_file() else []
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["machine"]["cpu"], e["machine"]["isa"], e["dataset"]), []).append(e)
    lines = []
    for (cpu, isa, dataset), runs in groups.items():
        lines.append(f"{cpu} ({isa}), {dataset}")
        for e in sorted(runs, key=lambda r: (r["result"]["trainer"], r["budget_min"])):
            r = e["result"]
            label = r["trainer"] + (f" w{r['width']}" if "width" in r else f" {r.get('preset', '')}")
            label += "".join(f" {o}" for o in r.get("overrides", []))
            lines.append(f"  {label:28s} {e['budget_min']:5.1f} min  kNN top-1 {r['knn_top1']:.4f}  "
                         f"({r['images_per_s']:.0f} img/s, {r['train_s']:.0f} s, {r['epochs']} epochs)")
        refs = [e for e in runs if e["result"]["trainer"] == "reference"]
        # the preset as shipped, not its recipe variants (--set)
        ours = sorted((e for e in runs if e["result"]["trainer"] == "ours" and not e["result"].get("overrides")),
                      key=lambda e: e["budget_min"])
        if refs and ours:
            ref = max(refs, key=lambda e: e["budget_min"])
            reached = next((e for e in ours if e["result"]["knn_top1"] >= ref["result"]["knn_top1"]), None)
            target = f"reference's {ref['budget_min']:g}-min {ref['result']['knn_top1']:.4f}"
            # measured training seconds, not budgets: a run that ends after its budget is not credited the budget
            lines.append(f"  ours reaches the {target} after {reached['result']['train_s']:.0f} s of training "
                         f"(its {reached['budget_min']:g}-min run): "
                         f"{ref['result']['train_s'] / reached['result']['train_s']:.1f}x sooner" if reached else
                         f"  ours does not reach the {target} within its budgets")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", default="ours,reference", help="comma-separated: ours, reference")
    ap.add_argument("--budgets", default="5,10,20", help="comma-separated minutes")
    ap.add_argument("--dataset", default=f"npz:{ROOT.parent / 'shared' / 'data' / 'cifar10_dev.npz'}")
    ap.add_argument("--preset", default="cifar10_cpu", help="our preset whose [train] section is used")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.KEY=VALUE",
                    help="a recipe variant of ours (repeatable); kept apart from the preset in the summary")
    ap.add_argument("--epochs", type=int, default=0,
                    help="ours: train this many epochs instead of fitting them to each budget (the budget is then "
                         "only a label)")
    ap.add_argument("--reference-width", type=int, default=64, help="64 = lightly's ResNet-18; 16 = ours")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reference DataLoader workers")
    ap.add_argument("--results", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    ap.add_argument("--summary", action="store_true", help="print the results table and exit")
    ap.add_argument("--write-photo-folder", type=Path, metavar="DIR", help="build a photo folder from the npz and exit")
    ap.add_argument("--size", type=int, default=64, help="side of --write-photo-folder's JPEGs")
    args = ap.parse_args()
    if args.summary:
        print(summary(args.results))
        return
    if args.write_photo_folder:
        write_photo_folder(Path(args.dataset.removeprefix("npz:")), args.write_photo_folder, args.size)
        return
    try:  # a bad --set ends in its one-line message, before any data is decoded
        ours_config(args.preset, 1, tuple(args.overrides))
    except (UsageError, ValueError) as error:  # a malformed override, or a key [train] does not have
        raise SystemExit(f"time_to_accuracy.py: {error}") from None
    data = load_data(args.dataset, args.preset)
    for budget in (float(b) for b in args.budgets.split(",")):
        for which in args.which.split(","):
            if which == "ours":
                result = run_ours(data, budget * 60, args.preset, tuple(args.overrides), args.epochs)
            else:
                result = run_reference(data, budget * 60, args.reference_width, args.workers)
            entry = {"budget_min": budget, "dataset": Path(args.dataset).name, "machine": machine(), "result": result,
                     "date": time.strftime("%Y-%m-%d %H:%M")}
            append_result(entry, args.results)
            print(json.dumps(entry), flush=True)
    print(summary(args.results))


if __name__ == "__main__":
    main()
