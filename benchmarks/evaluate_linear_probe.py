"""Linear probe benchmark: evaluate.linear_probe (torch L-BFGS) vs scikit-learn LogisticRegression.

Both sides get the same cached embeddings, the same standardisation, the same held-out slice, the same
penalty grid (sklearn ``C = 1 / (lam * n_fit)``) and then a refit on the whole train split at the chosen
penalty; we report wall time and test top-1 for each, plus a single-fit comparison at one fixed penalty.

Embeddings: ``--embeddings PATH.npz`` (train, y_train, test, y_test), or by default cifar10_dev raw-pixel
PCA-128 embeddings (benchmarks/evaluate_embeddings.py).

    python benchmarks/evaluate_linear_probe.py [--embeddings E.npz] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from edge_encoder.evaluate.knn import configure_threads
from edge_encoder.evaluate.linear_probe import (
    DEFAULT_L2_GRID,
    linear_probe,
    standardize,
)
from evaluate_embeddings import load_embeddings


def sklearn_probe(xtr, ytr, xte, yte, grid, holdout_fraction=0.2, seed=0) -> tuple[float, float, float]:
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    perm = np.random.default_rng(seed).permutation(len(xtr))
    n_hold = int(round(holdout_fraction * len(xtr)))
    hold, fit = perm[:n_hold], perm[n_hold:]
    xf, xh = standardize(xtr[fit], xtr[hold])
    val = {}
    for lam in sorted(grid, reverse=True):
        m = LogisticRegression(C=1.0 / (lam * len(fit)), max_iter=1000).fit(xf, ytr[fit])
        val[lam] = float((m.predict(xh) == ytr[hold]).mean())
    best = max(sorted(val, reverse=True), key=lambda lam: val[lam])
    xa, xq = standardize(xtr, xte)
    m = LogisticRegression(C=1.0 / (best * len(xtr)), max_iter=1000).fit(xa, ytr)
    return float((m.predict(xq) == yte).mean()), best, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    emb = load_embeddings(args.embeddings)
    xtr, ytr, xte, yte = emb["train"], emb["y_train"], emb["test"], emb["y_test"]
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # Same thread count for both sides: torch's intra-op pool and the BLAS/OpenMP pools sklearn uses.
    # The machine may be shared: interleave the two sides and keep each one's fastest run.
    ours_s, sk_times = [], []
    with threadpool_limits(limits=threads):
        for _ in range(args.repeats):
            ours = linear_probe(xtr, ytr, xte, yte, device="cpu")
            ours_s.append(ours.seconds)
            sk_top1, sk_lam, sk_s = sklearn_probe(xtr, ytr, xte, yte, DEFAULT_L2_GRID)
            sk_times.append(sk_s)
    ours_best, sk_best = min(ours_s), min(sk_times)
    result = {
        "threads": threads,
        "shape_train": list(xtr.shape),
        "ours": {"top1": ours.top1, "l2": ours.l2_penalty, "seconds": [round(t, 3) for t in ours_s]},
        "sklearn": {"top1": sk_top1, "l2": sk_lam, "seconds": [round(t, 3) for t in sk_times]},
        "speedup_best_of_runs": round(sk_best / ours_best, 2),
        "top1_diff_points": round(100 * (ours.top1 - sk_top1), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
