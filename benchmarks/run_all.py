"""Run the benchmark scripts one after another and keep their output in benchmarks/results/<script>.log.

    python benchmarks/run_all.py            # the quick set (a few minutes each on 2 cores)
    python benchmarks/run_all.py --full     # adds the 15-minute CIFAR pipeline and the 1M-vector index sweeps

Benchmarks run one at a time on purpose: on a 2-core machine two at once measure each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_dev.npz"

QUICK = [
    ["pipeline_e2e.py"],
    ["export_latency.py", "--width", "16"],
    ["train_augment.py"],
    ["train_streaming.py"],
    ["evaluate_linear_probe.py"],
]
FULL = [
    ["pipeline_e2e.py", "--config", "configs/cifar10_cpu.toml", "--dataset", f"npz:{CIFAR}", "--budget", "900", "--require-beat-raw-pixels"],
    ["train_throughput.py"],
    ["evaluate_engine_e2e.py"],
    ["evaluate_knn_speed.py"],
    ["evaluate_ann.py", "--bank-size", "1000000"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the long benchmarks")
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    failures = []
    for script, *rest in QUICK + (FULL if args.full else []):
        log_path = results / f"{Path(script).stem}.log"
        print(f">> {script} {' '.join(rest)}  (log: {log_path.relative_to(ROOT)})", flush=True)
        start = time.perf_counter()
        with log_path.open("w") as log:
            code = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *rest], cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"   exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failures.append(script)
    if failures:
        print("failed or missed their goal:", ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
