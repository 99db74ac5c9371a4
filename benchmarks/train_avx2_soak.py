"""Soak test for issue 18: the tiny config trained again and again under AVX2 emulation, no crash and no hang.

Usage: python benchmarks/train_avx2_soak.py [--runs 20] [--threads 1 2] [--timeout 300] [--native]
                                           [--set SECTION.KEY=VALUE ...]
       python benchmarks/train_avx2_soak.py --compare [--set train.width=8 ...]

Runs ``edge-encoder train --config tests/pipeline/tiny.toml --set train.num_threads=N`` (``python -m
edge_encoder.cli``, the installed package) ``--runs`` times per thread count, each in a fresh run directory with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (``--native``: the machine's own ISA) and a ``--timeout``
(a run past it counts as a hang, exit 124). Before the fix, channels_last at width 4 on AVX2 aborted with glibc
heap corruption at one thread (exit 134) and hung, or trained on wrong weight gradients, at two. Prints one row
per run (exit code, wall time, train seconds from the log, the recorded channels_last and precision) and a
summary per thread count; exits 1 when any run failed or hung.

``--compare``: one run each of channels_last false / true, under AVX2 emulation and natively, side by side
(``train.channels_last = true`` is obeyed even at the hazard, so on AVX2 at width < 8 that run is expected to
crash: it shows the trigger).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "pipeline" / "tiny.toml"
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def exit_name(code: int) -> str:
    """A shell-style exit code: a signal becomes 128 + its number, named (134 SIGABRT)."""
    if code < 0:
        return f"{128 - code} {signal.Signals(-code).name}"
    return {124: "124 timeout"}.get(code, str(code))


def train_once(runs_dir: Path, name: str, threads: int, avx2: bool, sets: list[str], timeout: float) -> dict:
    """One training run in its own process: exit code, wall seconds and the run's start/end log events."""
    env = {**os.environ, **AVX2_ENV} if avx2 else {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    cmd = [sys.executable, "-m", "edge_encoder.cli", "train", "--config", str(TINY), "--runs-dir", str(runs_dir),
           "--name", name, "--no-progress", "--set", f"train.num_threads={threads}"]
    for item in sets:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=runs_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
        code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:  # the child is killed by subprocess.run
        err = exc.stderr or ""
        code, stderr = 124, err.decode(errors="replace") if isinstance(err, bytes) else err
    wall = time.perf_counter() - t0
    log = runs_dir / name / "train" / "train_log.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    start = next((e for e in events if e["event"] == "start"), {})
    end = next((e for e in events if e["event"] == "end"), {})
    last = next((line for line in reversed(stderr.splitlines())  # glibc's or Python's last word, not a log line
                 if line.strip() and not line.startswith(("INFO ", "WARNING "))), "")
    return {"code": code, "wall": wall, "train_s": end.get("seconds"), "channels_last": start.get("channels_last"),
            "precision": start.get("precision"), "last_line": last}


def row(label: str, r: dict) -> str:
    train_s = f"{r['train_s']:.2f}" if r["train_s"] is not None else "-"
    note = "" if r["code"] == 0 else r["last_line"][:60]
    return (f"{label:<27} {exit_name(r['code']):<12} {r['wall']:>7.2f} {train_s:>8} "
            f"{str(r['channels_last']):<13} {str(r['precision']):<9} {note}")


HEADER = f"{'run':<27} {'exit':<12} {'wall_s':>7} {'train_s':>8} {'channels_last':<13} {'precision':<9} note"


def soak(args: argparse.Namespace, runs_dir: Path) -> int:
    print(f"config {TINY.relative_to(ROOT)}, {'native ISA' if args.native else 'AVX2 emulation'}, "
          f"{args.runs} runs per thread count, timeout {args.timeout:.0f} s, extra sets {args.set or '-'}")
    print(HEADER)
    failed = 0
    summary = []
    for threads in args.threads:
        results = []
        for i in range(args.runs):
            r = train_once(runs_dir, f"t{threads}_{i:02d}", threads, not args.native, args.set, args.timeout)
            results.append(r)
            print(row(f"threads={threads} run {i + 1:>2}", r), flush=True)
        bad = [r for r in results if r["code"] != 0]
        failed += len(bad)
        walls = sorted(r["wall"] for r in results)
        summary.append(f"threads={threads}: {len(results) - len(bad)}/{len(results)} exit 0, "
                       f"{sum(r['code'] == 124 for r in results)} hung; wall min {walls[0]:.2f} s, "
                       f"median {walls[len(walls) // 2]:.2f} s, max {walls[-1]:.2f} s")
    print("\n".join(summary))
    return 1 if failed else 0


def compare(args: argparse.Namespace, runs_dir: Path) -> int:
    print(f"config {TINY.relative_to(ROOT)}, threads {args.threads[0]}, extra sets {args.set or '-'}: one run each")
    print(HEADER)
    for avx2 in (True, False):
        for cl in ("false", "true"):
            label = f"{'avx2' if avx2 else 'native'} channels_last={cl}"
            r = train_once(runs_dir, label.replace(" ", "_").replace("=", ""), args.threads[0], avx2,
                           [*args.set, f"train.channels_last={cl}"], args.timeout)
            print(row(label, r), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per thread count (default 20)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="train.num_threads values")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run counts as hung")
    parser.add_argument("--native", action="store_true", help="the machine's own ISA instead of AVX2 emulation")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config override for every run (repeatable)")
    parser.add_argument("--compare", action="store_true",
                        help="channels_last false/true under AVX2 emulation and natively, one run each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avx2_soak_") as tmp:
        return compare(args, Path(tmp)) if args.compare else soak(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
