"""Latency (p50/p90/p99) and throughput per engine and batch size on this machine.

Builds a CIFAR-sized encoder (ResNet-18, CIFAR stem, width 16 or 32, 32x32) with random weights (speed
does not depend on the weights), exports FP32/FP16/INT8 variants calibrated on real CIFAR-10 images when
available, and times PyTorch eager FP32 and each ONNX Runtime engine at batch 1, 8 and 64.

    python benchmarks/export_latency.py [--width 16] [--batches 1 8 64] [--seconds 3] [--rounds 5] [--json out.json]

Engines are timed round-robin (``--rounds`` passes), so a noisy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import build_fp32_encoder, save_model
from edge_encoder.export.precision import make_variant
from edge_encoder.train.backbones import build_backbone

PREPROCESS = {"image_size": 32, "mean": [0.491, 0.482, 0.447], "std": [0.247, 0.243, 0.261]}


def _images(n: int) -> np.ndarray:
    path = ROOT.parent / "shared" / "data" / "cifar10_dev.npz"
    if path.is_file():
        with np.load(path) as d:
            return np.ascontiguousarray(d["x_train"][:n])
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def time_engine(engine, batch: np.ndarray, seconds: float, warmup: int = 3) -> list[float]:
    """Run ``engine.embed(batch)`` repeatedly for ~``seconds``; the per-call wall times in seconds."""
    for _ in range(warmup):
        engine.embed(batch)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        engine.embed(batch)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float], batch_size: int) -> dict[str, float]:
    """Latency percentiles in ms and throughput (img/s, from the median call) of per-call wall times."""
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_img_s": float(batch_size / np.median(times)),
            "runs": len(times)}


def time_interleaved(engines: dict, images: np.ndarray, batches: list[int], seconds: float,
                     rounds: int) -> dict[str, dict[int, dict[str, float]]]:
    """Time every engine at every batch size in ``rounds`` round-robin passes of ``seconds / rounds`` each.

    Interleaving makes the ratios side by side: a noisy neighbour slows every engine alike instead of
    whichever one happened to be running at the time."""
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in engines}
    for _ in range(rounds):
        for b in batches:
            for name, engine in engines.items():
                times[name][b] += time_engine(engine, images[:b], seconds / rounds, warmup=1)
    return {name: {b: summarize(t, b) for b, t in per.items()} for name, per in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin passes over the engines")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads and torch threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build_backbone({"arch": "resnet18", "width": args.width, "stem": "cifar"}).eval()
    images = _images(256)
    fp32 = build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript")[0]
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engines = {"pytorch_fp32": TorchEngine(backbone, PREPROCESS)}
        for variant in ("fp32", "fp16", "int8_trt", "int8_cpu"):
            path = Path(tmp) / f"encoder_{variant}.onnx"
            save_model(make_variant(fp32, variant, images[:128]), path)
            engines[f"onnx_{variant}"] = OnnxRuntimeEngine(path, intra_op_threads=args.threads)
        results = time_interleaved(engines, images, args.batches, args.seconds, args.rounds)
    print(f"ResNet-18 CIFAR stem width {args.width}, 32x32, torch threads {torch.get_num_threads()}")
    print(f"{'engine':<16}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'img/s':>10}{'x torch':>9}")
    for name, per_batch in results.items():
        for b, r in per_batch.items():
            speedup = r["throughput_img_s"] / results["pytorch_fp32"][b]["throughput_img_s"]
            print(f"{name:<16}{b:>6}{r['p50_ms']:>10.2f}{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                  f"{r['throughput_img_s']:>10.0f}{speedup:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"width": args.width, "results": results}, indent=2))


if __name__ == "__main__":
    main()
