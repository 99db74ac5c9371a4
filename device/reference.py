"""The reference set a bundle carries (``reference/``), so that a device can check its own engines.

Written at export from the parity images (the fixed evaluation subset), their labels and the FP32 PyTorch
embeddings of those images; each file is recorded in the manifest with its SHA-256 and shape, beside the gate
thresholds ``edge-encoder verify`` applies::

    reference/images.npy            uint8 (N, H, W, 3) RGB, N = min(256, parity images), a seeded class-balanced
                                    subset of them (all of them when there are at most 256)
    reference/labels.npy            int64 (N,)            (when the export had labels)
    reference/embeddings_fp32.npy   float32 (N, D)        FP32 PyTorch embeddings of those images

Files are ``.npy`` (``allow_pickle=False`` both ways): NumPy alone reads them, on any device.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.core.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from edge_encoder.core.files import atomic_write, file_sha256
from edge_encoder.core.subsets import seeded_rows, seeded_subset
from edge_encoder.device.manifest import BundleFileError, read_bundle_file
from edge_encoder.device.parity import ParityThresholds

REFERENCE_DIR = "reference"
MAX_REFERENCE_IMAGES = 256
REFERENCE_SEED = 0


@dataclass(frozen=True)
class ReferenceSet:
    """``images`` uint8 ``(N, H, W, 3)``, ``labels`` int64 ``(N,)`` or None, ``embeddings`` float32 ``(N, D)``."""

    images: np.ndarray
    labels: np.ndarray | None
    embeddings: np.ndarray


def _save_npy(bundle_dir: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    relative = f"{REFERENCE_DIR}/{name}.npy"
    atomic_write(bundle_dir / relative, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))
    return {"file": relative, "sha256": file_sha256(bundle_dir / relative), "shape": list(array.shape),
            "dtype": str(array.dtype)}


def write_reference_set(bundle_dir: Path, images: np.ndarray, labels: np.ndarray | None, embeddings: np.ndarray,
                        gates: dict[str, ParityThresholds]) -> dict[str, Any]:
    """Write ``min(256, N)`` rows of ``images`` uint8 ``(N, H, W, 3)``, ``labels`` int ``(N,)`` (optional) and
    ``embeddings`` float32 ``(N, D)`` (the FP32 reference of those images) under ``bundle_dir/reference/``.

    The rows are every row when N <= 256, else a seeded subset, class-balanced when there are labels
    (``core.subsets``): parity images are often the first test images, and a class-sorted split would otherwise
    leave the reference set one or two classes and its kNN figure meaningless.

    Returns the manifest's ``reference`` section: each file's path, SHA-256, shape and dtype, the rows taken
    (``parity_rows``), and ``gates`` (per variant, the parity thresholds ``edge-encoder verify`` applies).
    """
    if len(embeddings) != len(images) or (labels is not None and len(labels) != len(images)):
        raise ValueError(f"reference images, labels and embeddings must have one row each per image, got "
                         f"{len(images)}, {None if labels is None else len(labels)} and {len(embeddings)}")
    n = min(MAX_REFERENCE_IMAGES, len(images))
    rows = (seeded_subset(np.asarray(labels), n, REFERENCE_SEED) if labels is not None
            else seeded_rows(len(images), n, REFERENCE_SEED))
    section: dict[str, Any] = {
        "count": n,
        "source": f"{n} of the {len(images)} parity images (the export's fixed evaluation subset; "
                  + ("all of them" if n == len(images) else f"seeded{', class-balanced' if labels is not None else ''}"
                     f" subset, seed {REFERENCE_SEED}") + "), their labels and their FP32 PyTorch embeddings",
        "parity_rows": [int(i) for i in rows],
        "images": _save_npy(bundle_dir, "images", np.asarray(images[rows], dtype=np.uint8)),
        "embeddings_fp32": _save_npy(bundle_dir, "embeddings_fp32", np.asarray(embeddings[rows], dtype=np.float32)),
    }
    if labels is not None:
        section["labels"] = _save_npy(bundle_dir, "labels", np.asarray(labels, dtype=np.int64)[rows])
    section["gates"] = {variant: asdict(t) for variant, t in gates.items()}
    # The one kNN (core.knn) that the export gate used and that verify prints and gates on.
    section["knn"] = {"k": DEFAULT_K, "temperature": DEFAULT_TEMPERATURE, "vote": "weighted", "leave_one_out": True}
    return section


def _load_npy(bundle_dir: Path, entry: dict[str, Any], key: str, dtype: str) -> np.ndarray:
    data = read_bundle_file(bundle_dir, entry["file"], entry["sha256"], key=f"{key}.file")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)  # the bytes that were hashed; never a pickle
    except (ValueError, OSError, EOFError) as exc:
        raise BundleFileError(f"bundle file {entry['file']} ({key}) is not a readable .npy array: {exc}") from None
    if str(array.dtype) != dtype or list(array.shape) != list(entry["shape"]):
        raise BundleFileError(f"bundle file {entry['file']} ({key}) holds {array.dtype} {list(array.shape)}, the "
                              f"manifest records {dtype} {entry['shape']}")
    return array


def load_reference_set(bundle_dir: Path | str, manifest: dict[str, Any]) -> ReferenceSet:
    """The hash-checked reference set of a bundle whose ``manifest`` came from ``manifest.load_manifest``.

    Raises:
        BundleFileError: no reference set in the manifest, a file missing, changed, or not the recorded array.
    """
    bundle = Path(bundle_dir)
    ref = manifest.get("reference")
    if ref is None:
        raise BundleFileError(f"{bundle / 'manifest.json'} has no 'reference' set (the bundle was exported before "
                              "bundles carried one); re-export it to verify it on the device")
    size = manifest["input"]["image_size"]
    images = _load_npy(bundle, ref["images"], "reference.images", "uint8")
    embeddings = _load_npy(bundle, ref["embeddings_fp32"], "reference.embeddings_fp32", "float32")
    labels = _load_npy(bundle, ref["labels"], "reference.labels", "int64") if "labels" in ref else None
    n, dim = ref["count"], manifest["output"]["embedding_dim"]
    if images.shape != (n, size, size, 3):
        raise BundleFileError(f"reference.images has shape {images.shape}, expected ({n}, {size}, {size}, 3)")
    if embeddings.shape != (n, dim):
        raise BundleFileError(f"reference.embeddings_fp32 has shape {embeddings.shape}, expected ({n}, {dim})")
    if labels is not None and (labels.shape != (n,) or labels.min() < 0):
        raise BundleFileError(f"reference.labels must be {n} class ids >= 0, got shape {labels.shape}"
                              + (f", min {labels.min()}" if labels.size else ""))
    if n < 2:
        raise BundleFileError(f"reference.count is {n}; verify needs at least 2 reference images")
    return ReferenceSet(images=images, labels=labels, embeddings=embeddings)
