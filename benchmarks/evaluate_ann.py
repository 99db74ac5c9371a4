"""Approximate-search benchmark: recall@10 vs queries/s for FAISS indexes, on real and on large banks.

Runs ``evaluate.index_bench.index_benchmark_section`` (the default sweep: Flat, IVF nprobe sweep, HNSW32
efSearch sweep, IVF-PQ, SQ8; ``--shards N`` places each index as N CPU shards, GPUs are used when FAISS sees
them) on
- ``real``: the real train embeddings as the bank, the real test embeddings as queries;
- ``synthetic_<N>``: ``--bank-size`` vectors grown from the real train embeddings by
  ``evaluate.index_bench.synthesize_bank`` (each a real embedding + Gaussian noise of norm 0.5x the median
  10th-neighbour distance, re-normalised), queried with the real test embeddings.
Prints a recall-vs-QPS table and the recommendation (fastest setting with recall@10 >= target), and writes
``--out DIR``/index_benchmark.json + recall_vs_qps.png (the same section/plot the run report uses).

    python benchmarks/evaluate_ann.py [--embeddings E.npz] [--bank-size 1000000] [--skip-hnsw-large]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_encoder.evaluate.index_bench import index_benchmark_section, synthesize_bank
from edge_encoder.evaluate.knn import configure_threads
from edge_encoder.evaluate.report import to_jsonable
from evaluate_embeddings import load_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", type=Path, default=None)
    ap.add_argument("--bank-size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--recall-target", type=float, default=0.95)
    ap.add_argument("--skip-hnsw-large", action="store_true", help="HNSW build on the large bank takes minutes")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shards", type=int, default=1, help="CPU: IndexShards of this many parts (GPUs: always all)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_ann"))
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    emb = load_embeddings(args.embeddings)
    queries = emb["test"][: args.queries]
    large, _ = synthesize_bank(emb["train"], args.bank_size)
    large_name = f"synthetic_{args.bank_size}"
    section = index_benchmark_section(
        {"real": (emb["train"], f"{len(emb['train'])} real train embeddings"),
         large_name: (large, "real train embeddings + Gaussian perturbation (norm 0.5 x median 10th-NN distance)")},
        queries, engine=str(args.embeddings or "cifar10_dev raw-pixel PCA-128"), recall_target=args.recall_target,
        shards=args.shards, threads=threads, skip=("HNSW",) if args.skip_hnsw_large else ())
    rows = section["rows"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index_benchmark.json").write_text(json.dumps(to_jsonable(section), indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from edge_encoder.evaluate.plots import recall_vs_qps

        recall_vs_qps(plt, args.out, {"index_benchmark": section})
    except ImportError:
        pass
    print(f"{'bank':<20} {'index':<16} {'param':<14} {'recall@10':>9} {'q/s':>10} {'build s':>8} {'MiB':>8}  placement")
    for r in rows:
        print(f"{r['bank']:<20} {r['index']:<16} {r['param']:<14} {r['recall_at_10']:>9.4f} {r['qps']:>10.0f} "
              f"{r['build_s']:>8.1f} {r['memory_mb']:>8.1f}  {r['placement']}")
    print(f"recommendation (recall@10 >= {args.recall_target}, {large_name}): {section['recommendation']}")
    print(f"recommendation (real bank): {section['recommendation_real']}")


if __name__ == "__main__":
    main()
