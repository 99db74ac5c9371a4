"""Backbone stem and crop size for photo-sized images on a CPU: training images/s and kNN top-1 per variant.

Loads a dataset (``--dataset folder:PATH``, any spec; fitted to ``--size`` px), trains MoCo with ``configs/photos_cpu.toml``'s
``[train]`` section for ``--epochs`` epochs per variant (``STEM:CROP[:WIDTH]``, e.g. ``imagenet:64``,
``imagenet_nopool:48``, ``cifar:32:16``), and scores the PyTorch backbone with the weighted kNN the report uses
(``evaluate.knn.knn_accuracy``, ``[evaluate]`` k and temperature of the preset), next to raw pixels (per-image
mean-centred, L2-normalised, as the pipeline's ``raw_pixels``) and the same variant randomly initialised.

    python benchmarks/train_photo_resolution.py --dataset folder:/path/to/tree --size 64 \\
        --variant imagenet:64 --variant imagenet_nopool:48 --epochs 5
    python benchmarks/train_photo_resolution.py ... --steps 30     # throughput only: 30 steps, no kNN

Prints one JSON line per variant (images/s, s/epoch, kNN top-1 trained and random init) and the raw-pixel figure.
``images_per_cpu_s`` (training images per second of this process's CPU time) is the figure to compare on a
shared machine, where wall-clock images/s depend on the other jobs: on an idle machine with T threads,
images/s is about T times it (less the threads' parallel inefficiency; calibrate against a preset whose idle
images/s is known, e.g. ``configs/cifar10_cpu.toml``'s 1,183 in docs/BENCHMARKS.md).
Labels are used only for the kNN scores. Runs one variant at a time; each trains in a fresh run directory.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.knn import knn_accuracy
from edge_encoder.export.engines import TorchEngine
from edge_encoder.imagedata import load_dataset
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from edge_encoder.train.config import train_config_from_dict
from edge_encoder.train.loop import train_moco

ROOT = Path(__file__).resolve().parents[1]


def knn_top1(engine: Any, data: Any, k: int, temperature: float) -> float:
    """Weighted kNN top-1 of ``engine`` (``embed(uint8 (N, H, W, 3)) -> float32 (N, D)``): train split = bank."""
    bank = np.concatenate([engine.embed(data.x_train[i:i + 500]) for i in range(0, len(data.x_train), 500)])
    queries = np.concatenate([engine.embed(data.x_test[i:i + 500]) for i in range(0, len(data.x_test), 500)])
    return knn_accuracy(bank, data.y_train, queries, data.y_test, k=k, temperature=temperature)["top1"]


def run_variant(variant: str, base: dict, data: Any, preprocess: dict, knn: tuple[int, float], epochs: int,
                steps: int) -> dict:
    """Train one ``STEM:CROP[:WIDTH]`` variant in a fresh folder; its figures (without kNN when ``steps``)."""
    stem, crop, *width = variant.split(":")
    overrides = {"stem": stem, "crop_size": int(crop), "epochs": epochs, "knn_every_epochs": 0,
                 **({"width": int(width[0])} if width else {})}
    config = train_config_from_dict({**base, **overrides})
    run_dir = Path(tempfile.mkdtemp(prefix="photo_stem_"))
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = train_moco(data.x_train, config, run_dir, preprocess_mean=tuple(preprocess["mean"]),
                            preprocess_std=tuple(preprocess["std"]), progress=False, stop_at_step=steps or None)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        from edge_encoder.train.checkpoint import load_backbone

        backbone, _, _ = load_backbone(result.checkpoint_path)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    figures = {"variant": variant, "width": config.width, "params": sum(p.numel() for p in backbone.parameters()),
               "steps": result.steps, "images_per_s": round(result.images_per_s, 1),
               "images_per_cpu_s": round(result.steps * config.batch_size / cpu, 1), "train_wall_s": round(wall, 1),
               "final_loss": round(result.final_loss, 4)}
    if steps:
        return figures
    with TorchEngine(backbone, preprocess, name="trained") as engine:
        trained = knn_top1(engine, data, *knn)
    torch.manual_seed(config.seed)
    random_backbone = build_backbone(BackboneConfig(arch=config.arch, width=config.width, stem=config.stem)).eval()
    with TorchEngine(random_backbone, preprocess, name="random_init") as engine:
        random_init = knn_top1(engine, data, *knn)
    return {**figures, "epochs": epochs, "knn_top1": round(trained, 4), "random_init_knn_top1": round(random_init, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset spec, e.g. folder:PATH (an ImageFolder tree)")
    ap.add_argument("--size", type=int, default=0, help="side the images are fitted to (data.image_size; 0 = own)")
    ap.add_argument("--variant", action="append", required=True, help="STEM:CROP[:WIDTH] (repeatable)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="throughput only: stop after this many steps, no kNN")
    ap.add_argument("--config", default=str(ROOT / "configs" / "photos_cpu.toml"), help="preset giving [train]")
    ap.add_argument("--set", action="append", default=[], help="train override key=value (Python literal)")
    ap.add_argument("--max-train", type=int, default=0, help="seeded class-balanced subset of the train split")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default; 1 gives CPU-time figures "
                    "that a busy machine distorts least: no thread waits on a descheduled peer)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with open(args.config, "rb") as handle:
        preset = tomllib.load(handle)
    base = {**preset.get("train", {}), **{k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}}
    knn = (preset.get("evaluate", {}).get("knn_k", 20), preset.get("evaluate", {}).get("knn_temperature", 0.07))
    data = load_dataset(args.dataset, image_size=args.size or None, max_train=args.max_train or None)
    pixels = data.x_train.reshape(-1, 3).astype(np.float64) / 255.0
    preprocess = {"image_size": int(data.x_train.shape[1]), "mean": pixels.mean(0).tolist(),
                  "std": np.maximum(pixels.std(0), 1e-3).tolist()}
    raw = None
    if not args.steps:
        with RawPixelEngine(data.x_train, centering="image") as engine:
            raw = round(knn_top1(engine, data, *knn), 4)
    print(json.dumps({"dataset": args.dataset, "size": preprocess["image_size"], "train": len(data.x_train), "test": len(data.x_test),
                      "threads": torch.get_num_threads(), "knn_k_t": knn, "raw_pixels_knn_top1": raw}),
          flush=True)
    for variant in args.variant:
        print(json.dumps(run_variant(variant, base, data, preprocess, knn, args.epochs, args.steps)), flush=True)


if __name__ == "__main__":
    main()
