"""How much faster INT8 can be than FP32 on this CPU: the dense GEMM throughput of each, side by side.

An INT8 engine's convolutions are GEMMs; it cannot run faster than the int8 GEMM runs against the fp32 one (Q/DQ,
pooling and the rest add to both). On x86 the int8 throughput depends on the instruction set, not on ONNX
Runtime's options: AVX-512-VNNI / AVX-VNNI (``VPDPBUSD``: 4 u8 x s8 products into an int32 lane per instruction)
and AMX reach several times fp32, while AVX2 without VNNI needs ``VPMADDUBSW`` + ``VPMADDWD`` + ``VPADDD`` for the
same work, about 1.33x the multiply-adds per instruction of an fp32 FMA.

Measured here through oneDNN (``torch.mm`` in fp32 against ``torch._int_mm`` s8 x s8 -> s32), because oneDNN's ISA
can be capped: ``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine runs its AVX2 kernels (no VNNI, no AMX), which
is how the AVX2 row is reached without an AVX2-only CPU (say so when reporting). ONNX Runtime's MLAS picks its
kernels from CPUID and has no such cap, so its own AVX2 ratio needs an AVX2 machine.

Shapes: a square 1024 GEMM, and the im2col GEMMs of a width-16 ResNet-18's 3x3 convolutions at 32 px, batch 64
(M = 64 x H x W, K = 9 x C_in, N = C_out). Results are appended to ``benchmarks/results/int8_gemm_bound.json``.

Usage: python benchmarks/int8_gemm_bound.py [--threads 1] [--reps 10]
       ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/int8_gemm_bound.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from edge_encoder.core.files import atomic_write_json

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "int8_gemm_bound.json"
# (label, M, K, N): square, then width-16 ResNet-18 3x3 convs at 32 px (stages at 32, 16, 8, 4 px), batch 64
SHAPES = [("square 1024", 1024, 1024, 1024), ("conv 16->16 @32px", 64 * 1024, 144, 16),
          ("conv 32->32 @16px", 64 * 256, 288, 32), ("conv 64->64 @8px", 64 * 64, 576, 64),
          ("conv 128->128 @4px", 64 * 16, 1152, 128)]


def rate(fn: Callable[[], object], ops: float, reps: int) -> float:
    """Operations per second of ``fn`` (best of ``reps`` timed calls after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return ops / best


def measure(m: int, k: int, n: int, reps: int) -> dict[str, float]:
    """fp32 GFLOP/s, int8 GOP/s and their ratio for an ``(m, k) x (k, n)`` GEMM."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    # torch._int_mm wants m > 16 and k, n multiples of 8
    ai = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    bi = torch.randint(-128, 128, (k, n), dtype=torch.int8)
    ops = 2.0 * m * k * n
    fp32 = rate(lambda: a @ b, ops, reps) / 1e9
    int8 = rate(lambda: torch._int_mm(ai, bi), ops, reps) / 1e9
    return {"fp32_gflop_s": round(fp32, 1), "int8_gop_s": round(int8, 1), "ratio": round(int8 / fp32, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1: per-core figures)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [{"shape": label, "m": m, "k": k, "n": n, **measure(m, k, n, args.reps)} for label, m, k, n in SHAPES]
    entry = {"isa": torch.backends.cpu.get_cpu_capability(), "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
             "threads": args.threads, "torch": torch.__version__, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}
    for row in rows:
        print(f"{row['shape']:22s} fp32 {row['fp32_gflop_s']:7.1f} GFLOP/s  int8 {row['int8_gop_s']:7.1f} GOP/s  "
              f"int8/fp32 {row['ratio']:.2f}")
    entries = json.loads(args.results.read_text()) if args.results.is_file() else []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, [*entries, entry])


if __name__ == "__main__":
    main()
