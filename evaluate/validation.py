"""Checks of user-facing arrays (embeddings, labels) shared by the evaluate/ pure functions.

Every check raises ``ValueError``/``TypeError`` whose message names the offending argument and shape, so a
bad cache file or a broken engine is reported as such instead of surfacing as a FAISS assertion.
"""

from __future__ import annotations

import numpy as np


def check_embeddings(x: object, name: str) -> np.ndarray:
    """Validate a ``(N, D)`` embedding matrix and return it as C-contiguous ``float32``.

    Raises:
        TypeError: ``x`` is not a numeric ndarray.
        ValueError: not 2-D, empty (N == 0 or D == 0), or holding NaN/Inf.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}): the split has no images")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero-width embeddings (shape {x.shape})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{name} holds NaN/Inf in {bad} of {x.shape[0]} rows")
    return x


def check_labels(labels: object, n: int, name: str) -> np.ndarray:
    """Validate integer class labels for ``n`` items; returns ``int64 (n,)``.

    Raises:
        ValueError: labels missing (``None``), of the wrong length, or negative.
        TypeError: labels are not integers.
    """
    if labels is None:
        raise ValueError(f"{name} are missing (None); {n} integer labels are needed")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n} embeddings")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative class ids (min {int(arr.min())})")
    return arr


def check_same_dim(bank: np.ndarray, queries: np.ndarray) -> None:
    """Raise ``ValueError`` when bank and query embeddings differ in width."""
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"bank embeddings have dimension {bank.shape[1]} but queries have {queries.shape[1]} "
            f"(shapes {bank.shape} and {queries.shape})"
        )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (``float32``); all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
