"""Streamed training data (an image folder decoded by DataLoader workers) against the in-memory array path.

Usage: python benchmarks/train_streaming.py [--images 5000] [--format png|jpeg] [--epochs 2] [--repeats 2]
                                           [--workers 0 1 2]

Writes ``--images`` images of ``../shared/data/cifar10_dev.npz`` (x_train, 32 px) as an ImageFolder tree into a
temporary directory, then trains the ``configs/cifar10_cpu.toml`` model (width-16 ResNet-18, batch 256, 24 px
crops) for ``--epochs`` epochs: once from the decoded images held in memory (``train_moco(ndarray)``), then once
per worker count from ``imagedata.FolderImages`` (``data_workers = W``; 0 decodes in the training process),
the runs interleaved ``--repeats`` times and the fastest kept (a shared machine's noise only slows runs down).
Prints images/s (steps only: monitor and checkpoint time excluded, the wait for data included), the share of
step time spent waiting for the next uint8 batch (fetch) and for fetch plus augmentation (data), the wall time
of the call (worker start-up included) and whether the final loss equals the in-memory run's (it must: both
paths take the same rows and augment them alike). Skips with a message when the data file is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from edge_encoder.imagedata import FolderImages
from edge_encoder.train.config import train_config_from_dict
from edge_encoder.train.data import resolve_workers
from edge_encoder.train.loop import train_moco

CIFAR = ROOT.parent / "shared" / "data" / "cifar10_dev.npz"
PRESET = ROOT / "configs" / "cifar10_cpu.toml"
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


def write_tree(root: Path, images: np.ndarray, labels: np.ndarray, suffix: str) -> None:
    """``root/train/<label>/<i>.<suffix>`` plus one test image per class (the train/test layout needs both)."""
    from PIL import Image

    for split, idx in (("train", range(len(images))), ("test", [int(np.argmax(labels == c)) for c in np.unique(labels)])):
        for i in idx:
            folder = root / split / f"{labels[i]:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:05d}.{suffix}", **({"quality": 90} if suffix == "jpg" else {}))


def train_once(images, config_dict: dict, run_dir: Path) -> dict:  # noqa: ANN001
    started = time.perf_counter()
    result = train_moco(images, train_config_from_dict(config_dict), run_dir, preprocess_mean=MEAN,
                        preprocess_std=STD, progress=False)
    wall = time.perf_counter() - started
    end = json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[-1])
    return {"images_per_s": result.images_per_s, "fetch_wait_frac": end["fetch_wait_frac"],
            "data_wait_frac": end["data_wait_frac"], "wall_s": wall, "final_loss": result.final_loss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--format", choices=("png", "jpeg"), default="png")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    if not CIFAR.is_file():
        print(f"skipped: {CIFAR} not found (the benchmark writes its image folder from that file)")
        return 0
    with np.load(CIFAR) as archive:
        x, y = archive["x_train"][:args.images], archive["y_train"][:args.images]
    with PRESET.open("rb") as handle:
        preset = tomllib.load(handle)["train"]
    base = {**preset, "epochs": args.epochs, "knn_every_epochs": 0, "checkpoint_every_epochs": 0, "log_every": 1000,
            "tensorboard": False}
    with tempfile.TemporaryDirectory() as tmp:
        tree, suffix = Path(tmp) / "tree", "jpg" if args.format == "jpeg" else "png"
        t0 = time.perf_counter()
        write_tree(tree, x, y, suffix)
        folder = FolderImages.open(tree, "train", image_size=x.shape[1])
        decoded = np.stack([folder[i] for i in range(len(folder))])  # what the in-memory path holds
        print(f"wrote and decoded {len(folder)} {args.format} images of {x.shape[1]} px in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        train_moco(decoded, train_config_from_dict({**base, "epochs": 1}), Path(tmp) / "warmup",
                   preprocess_mean=MEAN, preprocess_std=STD, progress=False)  # first-call allocations, not measured
        runs = {"in-memory ndarray": (decoded, base)}
        runs.update({f"FolderImages, data_workers={w}": (folder, {**base, "data_workers": w}) for w in args.workers})
        rows: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for i, (name, (images, config)) in enumerate(runs.items()):
                r = train_once(images, config, Path(tmp) / f"run{repeat}_{i}")
                print(f"  {name}: {r['images_per_s']:.0f} images/s", flush=True)
                if name not in rows or r["images_per_s"] > rows[name]["images_per_s"]:
                    rows[name] = r
    reference = rows["in-memory ndarray"]
    print(f"\n{args.epochs} epochs x {len(decoded) // base['batch_size']} steps, batch {base['batch_size']}, "
          f"width {base['width']}, crops {base['crop_size']} px, best of {args.repeats}; "
          f"data_workers = 'auto' is {resolve_workers('auto', 'cpu')} on this CPU\n")
    print("| data path | images/s | vs in-memory | fetch wait | data wait (fetch + augment) | wall s | same loss |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['images_per_s']:.0f} | {r['images_per_s'] / reference['images_per_s']:.2f}x | "
              f"{r['fetch_wait_frac']:.1%} | {r['data_wait_frac']:.1%} | {r['wall_s']:.1f} | "
              f"{'yes' if r['final_loss'] == reference['final_loss'] else 'NO'} |")
    print(json.dumps({"format": args.format, "images": len(decoded), "epochs": args.epochs, "rows": rows}))
    return 0 if all(r["final_loss"] == reference["final_loss"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
