"""Real embeddings for the evaluate/ benchmarks (imported by benchmarks/evaluate_ann.py and evaluate_knn_speed.py).

Either a file written from a run (``--embeddings E.npz`` with ``train``/``test`` float arrays and optional
``y_train``/``y_test``), or by default a deterministic stand-in with real structure: cifar10_dev raw pixels,
mean-centred, projected on their top-``dim`` principal components (fitted on the train split) and
L2-normalised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cifar10_dev_path() -> Path:
    env = os.environ.get("EDGE_ENCODER_CIFAR10_DEV")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "cifar10_dev.npz"


def load_embeddings(path: Path | None, dim: int = 128) -> dict[str, np.ndarray]:
    """``{"train": (N, D), "test": (Q, D), "y_train", "y_test"}`` float32 embeddings and int64 labels."""
    if path is not None:
        with np.load(path) as d:
            out = {k: d[k] for k in d.files}
        missing = {"train", "test"} - set(out)
        if missing:
            raise SystemExit(f"{path}: missing arrays {sorted(missing)} (expected train, test)")
        return out
    src = cifar10_dev_path()
    if not src.is_file():
        raise SystemExit(f"cifar10_dev.npz not found at {src}; pass --embeddings or set EDGE_ENCODER_CIFAR10_DEV")
    with np.load(src) as d:
        x_train = d["x_train"].reshape(len(d["x_train"]), -1).astype(np.float32)
        x_test = d["x_test"].reshape(len(d["x_test"]), -1).astype(np.float32)
        y_train, y_test = d["y_train"].astype(np.int64), d["y_test"].astype(np.int64)
    mean = x_train.mean(axis=0)
    # Principal axes from the SVD of the centred train matrix; 10k x 3072 takes a few seconds.
    _, _, vt = np.linalg.svd(x_train - mean, full_matrices=False)
    proj = vt[:dim].T
    out = {}
    for name, x in (("train", x_train), ("test", x_test)):
        z = (x - mean) @ proj
        out[name] = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    out["y_train"], out["y_test"] = y_train, y_test
    return out
