"""kNN classification speed: FAISS exact search vs the matmul + top-k kNN of SSL libraries.

Same bank, same queries, same k (200) and T (0.1): the matmul side computes ``queries_chunk @ bank.T`` in
torch and takes ``topk`` (as DINO / lightly / solo-learn do), the FAISS side uses ``evaluate.knn.exact_search``
(tiled flat inner product). Predictions must be identical. An IVF index (nprobe sweep) is timed on the same
task for the approximate side, with recall@10 against exact search.

Bank: ``--bank-size`` (default 1,000,000) vectors grown from real embeddings by
``evaluate.index_bench.synthesize_bank`` (real embeddings + Gaussian perturbation, see there); queries: the
real test embeddings. Default embeddings: cifar10_dev raw-pixel PCA-128 (benchmarks/evaluate_embeddings.py).

    python benchmarks/evaluate_knn_speed.py [--bank-size 1000000] [--queries 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from edge_encoder.evaluate.index_bench import recall_at_10, synthesize_bank
from edge_encoder.evaluate.knn import (
    configure_threads,
    exact_search,
    rank_classes,
    vote_scores,
)
from evaluate_embeddings import load_embeddings


def matmul_topk(bank: torch.Tensor, queries: torch.Tensor, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The SSL-library kNN search: full similarity rows per query chunk, then ``topk``."""
    sims, ids = [], []
    for s in range(0, queries.shape[0], chunk):
        v, i = (queries[s : s + chunk] @ bank.T).topk(k, dim=1)
        sims.append(v)
        ids.append(i)
    return torch.cat(sims).numpy(), torch.cat(ids).numpy()


def predict(sims: np.ndarray, ids: np.ndarray, labels: np.ndarray, num_classes: int, t: float) -> np.ndarray:
    return rank_classes(vote_scores(sims, labels[ids], num_classes, t), 1)[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", type=Path, default=None)
    ap.add_argument("--bank-size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--chunk", type=int, default=128, help="matmul query chunk (SSL libraries use the batch size)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default 1024 for >= 500k vectors, else sqrt(N))")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    emb = load_embeddings(args.embeddings)
    bank, sources = synthesize_bank(emb["train"], args.bank_size)
    labels = emb["y_train"][sources]  # synthetic rows inherit the label of the real embedding they came from
    queries = emb["test"][: args.queries]
    c = int(labels.max()) + 1
    res: dict[str, object] = {"threads": threads, "bank": list(bank.shape), "queries": len(queries), "k": args.k}

    tb, tq = torch.from_numpy(bank), torch.from_numpy(queries)
    start = time.perf_counter()
    m_sims, m_ids = matmul_topk(tb, tq, args.k, args.chunk)
    m_pred = predict(m_sims, m_ids, labels, c, args.temperature)
    res["matmul_topk_qps"] = len(queries) / (time.perf_counter() - start)

    start = time.perf_counter()
    f_sims, f_ids = exact_search(bank, queries, args.k, normalize=False)
    f_pred = predict(f_sims, f_ids, labels, c, args.temperature)
    res["faiss_exact_qps"] = len(queries) / (time.perf_counter() - start)
    res["identical_predictions"] = bool((m_pred == f_pred).all())
    res["prediction_mismatches"] = int((m_pred != f_pred).sum())
    res["faiss_speedup_vs_matmul"] = res["faiss_exact_qps"] / res["matmul_topk_qps"]

    nlist = args.nlist or (1024 if args.bank_size >= 500_000 else max(16, int(np.sqrt(args.bank_size))))
    index = faiss.index_factory(bank.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    index.train(bank[np.random.default_rng(0).choice(len(bank), size=min(len(bank), 64 * nlist), replace=False)])
    index.add(bank)
    res["ivf_build_s"] = time.perf_counter() - start
    res["ivf"] = []
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        start = time.perf_counter()
        a_sims, a_ids = index.search(queries, args.k)
        a_pred = predict(a_sims, np.maximum(a_ids, 0), labels, c, args.temperature)
        qps = len(queries) / (time.perf_counter() - start)
        res["ivf"].append({"index": f"IVF{nlist},Flat", "nprobe": nprobe, "qps": qps,
                           "speedup_vs_matmul": qps / res["matmul_topk_qps"],
                           "recall_at_10": recall_at_10(a_ids, f_ids),
                           "knn_prediction_agreement": float((a_pred == f_pred).mean())})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
