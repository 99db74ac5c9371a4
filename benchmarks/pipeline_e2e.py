"""End-to-end benchmark: wall time and headline figures of `python pipeline.py` with a preset.

    python benchmarks/pipeline_e2e.py                       # default preset (digits, CPU): goal <= 180 s
    python benchmarks/pipeline_e2e.py --config configs/cifar10_cpu.toml \
        --dataset npz:../shared/data/cifar10_dev.npz --budget 900 --require-beat-raw-pixels

Runs the real command in a fresh run directory (no resume), then checks the acceptance conditions:
wall time within the budget and the trained engine's kNN top-1 above the random-init baseline (and, with
--require-beat-raw-pixels, above raw pixels). Writes benchmarks/results/pipeline_<name>.json. Exit 1 if a condition fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits_cpu.toml"))
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--budget", type=float, default=180.0, help="wall-time goal in seconds")
    parser.add_argument("--engine", default="onnx_fp32", help="engine whose kNN top-1 must beat the baselines")
    parser.add_argument("--require-beat-raw-pixels", action="store_true",
                        help="also require beating the raw-pixel baseline (CIFAR; on digits raw pixels score 0.97)")
    parser.add_argument("extra", nargs="*", help="further pipeline.py arguments, e.g. --set train.epochs=5")
    args = parser.parse_args()

    runs = Path(tempfile.mkdtemp(prefix="bench_runs_"))
    command = [sys.executable, str(ROOT / "pipeline.py"), "--config", args.config, "--runs-dir", str(runs), "--name", "bench", "--no-progress"]
    if args.dataset:
        command += ["--dataset", args.dataset]
    command += args.extra
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"pipeline exited with {result.returncode}")
        return 1
    report = json.loads((runs / "bench" / "report.json").read_text())
    metrics = report["metrics"]
    top1 = {name: entry["knn_top1"] for name, entry in metrics.items()}
    checks = {
        f"wall_time <= {args.budget:.0f} s": wall <= args.budget,
        f"{args.engine} knn_top1 > random_init": top1[args.engine] > top1["random_init"],
    }
    if args.require_beat_raw_pixels:
        checks[f"{args.engine} knn_top1 > raw_pixels"] = top1[args.engine] > top1["raw_pixels"]
    summary = {
        "config": args.config,
        "dataset": report["dataset"]["spec"],
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "wall_time_s": round(wall, 1),
        "timings_s": report["timings_s"],
        "knn_top1": top1,
        "linear_top1": {name: entry.get("linear_top1") for name, entry in metrics.items()},
        "checks": checks,
    }
    out = ROOT / "benchmarks" / "results" / f"pipeline_{Path(args.config).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
