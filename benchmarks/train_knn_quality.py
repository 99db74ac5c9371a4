"""CPU quality per minute: MoCo on cifar10_dev (or sklearn digits), then weighted kNN of backbone features.

kNN: cosine similarity, k=20, votes weighted by exp(sim / 0.07), bank = train split, queries = test split, as
evaluate/ scores it (re-implemented here in a few lines: train/ code never imports evaluate/).

Usage: python benchmarks/train_knn_quality.py [--data cifar10_dev|digits] [--threads T] [--set key=value ...]
Prints images/s, training seconds, the kNN top-1 curve and the random-init baseline. Budgets on the 2-core CPU:
15 minutes of training for cifar10_dev, 60-90 s for digits. Labels are used only for the kNN score.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from edge_encoder.train.config import train_config_from_dict
from edge_encoder.train.loop import train_moco

ROOT = Path(__file__).resolve().parents[1]


def load_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``, images uint8 (N, H, W, 3)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images).float()[:, None] / 16.0  # N x 1 x 8 x 8 in [0, 1]
        x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)  # 16 x 16, as imagedata/ serves it
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).expand(-1, -1, -1, 3).numpy()
        y = digits.target.astype(np.int64)
        split = np.random.default_rng(0).permutation(len(x))
        tr, te = split[: int(0.8 * len(x))], split[int(0.8 * len(x)):]
        return np.ascontiguousarray(x[tr]), y[tr], np.ascontiguousarray(x[te]), y[te]
    env = os.environ.get("EDGE_ENCODER_CIFAR10_DEV")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "cifar10_dev.npz"
    if not path.is_file():
        sys.exit(f"cifar10_dev.npz not found at {path} (set EDGE_ENCODER_CIFAR10_DEV)")
    d = np.load(path)
    return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> L2-normalised float32 (N, D) backbone features."""
    out = []
    for i in range(0, len(images), 500):
        x = torch.from_numpy(images[i:i + 500]).permute(0, 3, 1, 2).float().div(255)
        out.append(F.normalize(backbone((x - mean) / std).float(), dim=1))
    return torch.cat(out)


def weighted_knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                      labels: torch.Tensor, k: int = 20, t: float = 0.07) -> float:
    sims = queries @ bank.T  # Q x N
    top_sim, top_idx = sims.topk(k, dim=1)  # Q x k
    votes = torch.zeros(len(queries), int(bank_labels.max()) + 1)
    votes.scatter_add_(1, bank_labels[top_idx], torch.exp(top_sim / t))
    return float((votes.argmax(1) == labels).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="cifar10_dev", choices=["cifar10_dev", "digits"])
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value (Python literals)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--run-dir", default="/tmp/moco_knn_bench")
    ap.add_argument("--keep", action="store_true", help="resume from --run-dir instead of starting fresh")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_data(args.data)
    mean = tuple(float(v) for v in x_train.reshape(-1, 3).mean(0) / 255)
    std = tuple(float(v) for v in x_train.reshape(-1, 3).std(0) / 255)
    overrides = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = train_config_from_dict({"epochs": 20, "knn_every_epochs": 5, **overrides})
    mean_t, std_t = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
    ytr, yte = torch.from_numpy(y_train.astype(np.int64)), torch.from_numpy(y_test.astype(np.int64))

    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        return {"knn_top1": weighted_knn_top1(embed(backbone, x_train, mean_t, std_t), ytr,
                                              embed(backbone, x_test, mean_t, std_t), yte)}

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        random_init = build_backbone(BackboneConfig(arch=config.arch, width=config.width, stem=config.stem)).eval()
        baseline = monitor(random_init)["knn_top1"]
    if not args.keep:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    t0 = time.time()
    result = train_moco(x_train, config, Path(args.run_dir), preprocess_mean=mean, preprocess_std=std,
                        progress=False, knn_monitor=monitor)
    curve = [(h["epoch"], round(h["knn_top1"], 4)) for h in result.history if h["event"] == "knn"]
    print(json.dumps({"config": overrides, "threads": torch.get_num_threads(), "images_per_s": round(result.images_per_s, 1),
                      "train_seconds": round(result.seconds, 1), "wall_seconds": round(time.time() - t0, 1),
                      "final_loss": round(result.final_loss, 4), "knn_top1_curve": curve,
                      "random_init_knn_top1": round(baseline, 4)}))


if __name__ == "__main__":
    main()
