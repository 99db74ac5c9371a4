"""Seeded subsets: the same rows for the same seed, on every machine (NumPy's PCG64 generator)."""

from __future__ import annotations

import numpy as np


def seeded_rows(n_available: int, n: int, seed: int) -> np.ndarray:
    """Sorted ``int64`` indices of ``min(n, n_available)`` rows of ``n_available``, drawn without replacement."""
    if n_available < 1:
        raise ValueError("no rows to choose from (the split is empty)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_available, size=min(n, n_available), replace=False)).astype(np.int64)


def seeded_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of ``count`` items, taken round-robin over classes in a seeded order (keeps classes balanced)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    # Rank of each item within its class, in the shuffled order; sorting by it interleaves the classes.
    rank = np.empty(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for position, index in enumerate(order):
        label = int(labels[index])
        rank[position] = seen.get(label, 0)
        seen[label] = rank[position] + 1
    chosen = order[np.argsort(rank, kind="stable")[:count]]
    return np.sort(chosen)
