"""Which training settings are fastest on this CPU: precision, memory format, torch.compile and threads, per preset.

For each combination, the steady images/s of the real trainer (``train.loop.train_moco`` with the preset's
``[train]`` section): the wall time of a 4-step and a ``--steps``-step run in fresh folders differ by the steady
steps' time, so start-up (model build, first-step warm-up, a compile) is left out and reported apart as
``startup_s``. The preset as shipped (its ``"auto"`` settings) is measured last and printed beside the fastest
combination, so the per-ISA choice (``train.loop.resolve_bf16`` / ``resolve_channels_last``) is checked against
measurement.

Run it once per instruction set; on an AVX-512 machine the AVX2 code paths are reached with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (say so when reporting). Results are appended to
``benchmarks/results/train_settings.json`` with the CPU and ISA.

Usage: python benchmarks/train_settings.py [--preset cifar10_cpu] [--dataset npz:PATH] [--steps 16]
       [--threads 1,2] [--compile]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_encoder.core.files import atomic_write_json
from edge_encoder.imagedata.stats import channel_stats
from edge_encoder.settings import load_config_file, preset_path
from edge_encoder.train.config import TrainConfig, train_config_from_dict
from edge_encoder.train.loop import resolve_bf16, train_moco

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_settings.json"


def images_of(spec: str, size: int | None) -> np.ndarray:
    """The training images of an npz (``x_train``), or random uint8 images of ``size`` px for ``synthetic``."""
    if spec == "synthetic":
        return np.random.default_rng(0).integers(0, 256, (4096, size or 32, size or 32, 3), dtype=np.uint8)
    with np.load(Path(spec.removeprefix("npz:"))) as data:
        return data["x_train"]


def wall_time(images: np.ndarray, config: TrainConfig, steps: int, mean: list[float],
              std: list[float]) -> tuple[float, dict[str, Any]]:
    """Seconds of a fresh ``train_moco`` run stopped after ``steps`` steps (start-up included), and the runtime
    settings the trainer chose (``TrainResult.runtime``)."""
    per_epoch = len(images) // config.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train_moco(images, replace(config, epochs=max(1, math.ceil(steps / per_epoch)), knn_every_epochs=0),
                            Path(tmp), preprocess_mean=tuple(mean), preprocess_std=tuple(std), progress=False,
                            stop_at_step=steps)
        return time.perf_counter() - started, result.runtime


def measure(images: np.ndarray, config: TrainConfig, steps: int) -> dict[str, Any]:
    """Steady images/s and start-up seconds of ``config`` on ``images``, with the settings the run used."""
    mean, std = channel_stats(images)
    startup = None
    if config.compile:  # a first run compiles; the two timed ones then load the same cached kernels
        started = time.perf_counter()
        wall_time(images, config, 4, mean, std)
        startup = time.perf_counter() - started
    (short, _), (long, runtime) = wall_time(images, config, 4, mean, std), wall_time(images, config, steps, mean, std)
    per_step = max(long - short, 1e-6) / (steps - 4)
    return {"precision": runtime["precision"], "channels_last": runtime["channels_last"],
            "compile": runtime["compile"], "threads": runtime["threads"],
            "images_per_s": round(config.batch_size / per_step, 1),
            "startup_s": round((startup if startup is not None else short) - 4 * per_step, 1)}


def measure_apart(args: argparse.Namespace, setting: dict[str, Any] | None) -> dict[str, Any]:
    """``measure`` in a fresh process (``setting`` None: the preset as shipped). Apart because inductor reuses a
    kernel compiled for one thread count at another in the same process (torch 2.14 crashed with "malloc():
    unaligned tcache chunk detected" going from 1 to 2 threads), and so every row starts as a user's run does."""
    cmd = [sys.executable, __file__, "--preset", args.preset, "--dataset", args.dataset, "--steps", str(args.steps),
           "--one", json.dumps(setting)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**(setting or {"auto": True}), "error": f"no result within {args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {**(setting or {"auto": True}), "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cifar10_cpu")
    ap.add_argument("--dataset", default=f"npz:{ROOT.parent / 'shared' / 'data' / 'cifar10_dev.npz'}",
                    help="npz:PATH (x_train) or synthetic (random images at the preset's crop size)")
    ap.add_argument("--steps", type=int, default=16, help="steps of the long run (the short one has 4)")
    ap.add_argument("--threads", default=str(torch.get_num_threads()), help="comma-separated intra-op thread counts")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (inductor)")
    # bf16 only where the CPU computes it natively by default: emulated bf16 runs at ~1 GFLOP/s (minutes per step)
    ap.add_argument("--precisions", default="fp32,bf16" if resolve_bf16("auto", torch.device("cpu")) else "fp32",
                    help="comma-separated: fp32, bf16 (default: bf16 only where native)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--timeout", type=int, default=900, help="seconds allowed for one combination")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (JSON) in this process
    args = ap.parse_args()
    base = train_config_from_dict(dict(load_config_file(preset_path(args.preset))["train"]))
    if args.one is not None:
        setting = json.loads(args.one)
        config = base if setting is None else replace(base, **setting)
        print(json.dumps(measure(images_of(args.dataset, base.crop_size or None), config, args.steps)))
        return
    rows: list[dict[str, Any]] = []
    for bf16, channels_last, compiled, threads in itertools.product(
            [p == "bf16" for p in args.precisions.split(",")], (False, True), (False, True) if args.compile else (False,),
            (int(t) for t in args.threads.split(","))):
        setting = {"bf16": bf16, "channels_last": channels_last, "compile": compiled, "num_threads": threads}
        rows.append(measure_apart(args, setting))
        print(json.dumps(rows[-1]), flush=True)
    auto = measure_apart(args, None)  # the preset as shipped: what "auto" picks here, and its speed
    print(json.dumps({"auto": auto}), flush=True)
    rows = [r for r in rows if "error" not in r] or rows
    best = max(rows, key=lambda r: r.get("images_per_s", 0.0))
    entry = {"preset": args.preset, "dataset": Path(args.dataset).name, "isa": torch.backends.cpu.get_cpu_capability(),
             "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "torch": torch.__version__, "rows": rows,
             "fastest": best, "auto": auto, "date": time.strftime("%Y-%m-%d %H:%M")}
    entries = json.loads(args.results.read_text()) if args.results.is_file() else []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, [*entries, entry])
    print(json.dumps({"fastest": best, "auto": auto}))


if __name__ == "__main__":
    main()
