"""device.reference: the hashed reference set a bundle carries (written at export, read back hash-checked)."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.device.bundle_files import BundleFileError, check_manifest
from edge_encoder.device.parity import DEFAULT_THRESHOLDS
from edge_encoder.device.reference import load_reference_set, write_reference_set

from tests.export.tiny_bundle import sha256

GATES = {"fp32": DEFAULT_THRESHOLDS["fp32"]}


def _manifest(section: dict, size: int = 4, dim: int = 8) -> dict:
    """A minimal valid manifest around a reference section (the rest as export_bundle writes it)."""
    manifest = {"format": "edge-encoder/deploy-bundle/1", "input": {"image_size": size},
                "preprocessing": {"in_graph": True, "mean": [0.5] * 3, "std": [0.25] * 3},
                "output": {"embedding_dim": dim}, "variants": {"fp32": {"file": "encoder_fp32.onnx", "sha256": "0" * 64}},
                "provenance": {}, "reference": section}
    check_manifest(manifest)
    return manifest


def _data(n: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), n // classes)  # class-sorted, like many test splits
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    return images, labels, embeddings


def test_a_class_sorted_parity_set_gives_a_balanced_reference(tmp_path) -> None:
    images, labels, embeddings = _data(1000)
    section = write_reference_set(tmp_path, images, labels, embeddings, GATES)
    rows = np.asarray(section["parity_rows"])
    assert section["count"] == len(rows) == 256 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows], minlength=10).min() >= 25  # every class, ~26 each (not the first 2 classes)
    ref = load_reference_set(tmp_path, _manifest(section))
    np.testing.assert_array_equal(ref.images, images[rows])
    np.testing.assert_array_equal(ref.labels, labels[rows])
    np.testing.assert_array_equal(ref.embeddings, embeddings[rows])
    assert section["images"] == {"file": "reference/images.npy", "sha256": sha256(tmp_path / "reference" / "images.npy"),
                                 "shape": [256, 4, 4, 3], "dtype": "uint8"}
    assert section["gates"]["fp32"]["min_cosine"] == DEFAULT_THRESHOLDS["fp32"].min_cosine


def test_small_parity_set_is_kept_whole_and_labels_are_optional(tmp_path) -> None:
    images, _, embeddings = _data(40)
    section = write_reference_set(tmp_path, images, None, embeddings, GATES)
    assert section["count"] == 40 and section["parity_rows"] == list(range(40)) and "labels" not in section
    ref = load_reference_set(tmp_path, _manifest(section))
    assert ref.labels is None and ref.images.shape == (40, 4, 4, 3)


def _rewrite(tmp_path: Path, section: dict, name: str, array: np.ndarray, *, allow_pickle: bool = False) -> dict:
    """Replace one reference file and record its new hash (what a careful forger would do)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    (tmp_path / "reference" / f"{name}.npy").write_bytes(buffer.getvalue())
    section = copy.deepcopy(section)
    section[name]["sha256"] = sha256(tmp_path / "reference" / f"{name}.npy")
    return section


@pytest.mark.parametrize("name, array, message", [
    ("embeddings_fp32", np.zeros((40, 8), np.float64), "holds float64 [40, 8], the manifest records float32"),
    ("images", np.zeros((39, 4, 4, 3), np.uint8), "holds uint8 [39, 4, 4, 3]"),
    ("labels", np.array([{"a": 1}] * 40, dtype=object), "is not a readable .npy array"),
])
def test_a_hash_matching_but_wrong_array_is_refused(tmp_path, name, array, message) -> None:
    images, labels, embeddings = _data(40, classes=4)
    section = write_reference_set(tmp_path, images, labels, embeddings, GATES)
    forged = _rewrite(tmp_path, section, name, array, allow_pickle=array.dtype == object)
    with pytest.raises(BundleFileError) as err:
        load_reference_set(tmp_path, _manifest(forged))
    assert message in str(err.value) and f"reference/{name}.npy" in str(err.value)


def test_a_changed_file_is_refused_naming_it(tmp_path) -> None:
    images, labels, embeddings = _data(40, classes=4)
    section = write_reference_set(tmp_path, images, labels, embeddings, GATES)
    path = tmp_path / "reference" / "labels.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleFileError, match=r"reference/labels.npy \(key 'reference.labels.file'\) does not match"):
        load_reference_set(tmp_path, _manifest(section))


def test_rows_must_match(tmp_path) -> None:
    images, labels, embeddings = _data(40, classes=4)
    with pytest.raises(ValueError, match="one row each per image"):
        write_reference_set(tmp_path, images, labels, embeddings[:39], GATES)
