"""One kNN (issue 16 point 5, issue 17): the report, the export gate and ``verify`` classify with ``core.knn``, and the
kNN figure ``verify`` prints is the one it gates on — shown on a crafted engine whose embeddings make a weighted and a
majority vote disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from edge_encoder import cli
from edge_encoder.core import knn as core_knn
from edge_encoder.core.files import file_sha256
from edge_encoder.device.parity import compare_embeddings
from edge_encoder.evaluate import knn as evaluate_knn
from onnx import TensorProto, helper, numpy_helper

from tests.export.conftest import IMAGE_SIZE
from tests.export.tiny_bundle import build_tiny_bundle, copy_bundle

K = 5  # recorded as reference.knn.k in the crafted bundle


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def crafted_embeddings(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference (16, dim), candidate (16, dim), labels (16,)): two orthogonal groups of 4 class-A and 4 class-B rows.

    Reference: A rows identical, B rows identical, cosine(A, B) = 0.3 -> with k = 5 every row has 3 same-class
    neighbours at 1.0 and 2 others at 0.3: weighted and majority votes are both right (accuracy 1).
    Candidate: A rows form two pairs (cosine 0.2 between the pairs), every A row is at 0.6 from the 4 identical B rows.
    An A query's 5 neighbours are its pair twin (1.0) and the 4 B rows (0.6): a majority vote says B (wrong), the
    weighted vote e^(1/T) > 4 e^(0.6/T) says A (right). B queries stay right. Weighted 1.0, majority 0.5.
    """
    e = np.eye(dim)
    ref, cand, labels = [], [], []
    for g in range(2):
        b0, b1, b2 = e[4 * g], e[4 * g + 1], e[4 * g + 2]
        a_ref, b_ref = b0, _unit(0.3 * b0 + np.sqrt(0.91) * b1)
        u1, u2 = b0, _unit(0.2 * b0 + np.sqrt(0.96) * b1)
        c = (0.6 - 0.2 * 0.6) / np.sqrt(0.96)
        w = _unit(0.6 * b0 + c * b1 + np.sqrt(max(1 - 0.36 - c * c, 0)) * b2)
        ref += [a_ref] * 4 + [b_ref] * 4
        cand += [u1, u1, u2, u2] + [w] * 4
        labels += [0] * 4 + [1] * 4
    return np.array(ref, np.float32), np.array(cand, np.float32), np.array(labels, np.int64)


def lookup_encoder(table: np.ndarray, path: Path) -> None:
    """An ONNX 'encoder' returning ``table[pixel (0, 0, R)]``: uint8 (N, 16, 16, 3) -> float32 (N, D)."""
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["px"]),  # N x 1 x 1 x 1
        helper.make_node("Reshape", ["px", "flat"], ["px_flat"]),
        helper.make_node("Cast", ["px_flat"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["embeddings"], axis=0),
    ]
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(np.array([0, 0, 0], np.int64), "starts"),
             numpy_helper.from_array(np.array([1, 1, 1], np.int64), "ends"),
             numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    graph = helper.make_graph(nodes, "lookup", [helper.make_tensor_value_info(
        "images", TensorProto.UINT8, ["N", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", table.shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _rehash(bundle: Path, manifest: dict) -> None:
    """Record the current digest of every file the manifest lists (as an export would have)."""
    for section in (manifest["variants"].values(), [v for v in manifest["reference"].values() if isinstance(v, dict)]):
        for entry in section:
            if isinstance(entry, dict) and "file" in entry and "sha256" in entry:
                entry["sha256"] = file_sha256(bundle / entry["file"])
    if isinstance(manifest.get("files"), dict):
        manifest["files"] = {rel: file_sha256(bundle / rel) for rel in manifest["files"] if (bundle / rel).is_file()}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("knn") / "deploy", variants=("fp32",))


def craft(bundle: Path, dest: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    copy = copy_bundle(bundle, dest)
    manifest = json.loads((copy / "manifest.json").read_text())
    dim = manifest["output"]["embedding_dim"]
    ref, cand, labels = crafted_embeddings(dim)
    images = np.zeros((16, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(16)
    lookup_encoder(cand, copy / manifest["variants"]["fp32"]["file"])
    for key, array in (("images", images), ("embeddings_fp32", ref), ("labels", labels)):
        np.save(copy / manifest["reference"][key]["file"], array)
        manifest["reference"][key]["shape"] = list(array.shape)
    manifest["reference"].update(count=16, parity_rows=list(range(16)))
    manifest["reference"]["knn"] = {"k": K, "temperature": 0.07, "vote": "weighted", "leave_one_out": True}
    (copy / "triton").exists() and [p.unlink() for p in (copy / "triton").rglob("model.onnx")]
    _rehash(copy, manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy, ref, cand, labels


def test_the_crafted_votes_disagree() -> None:
    ref, cand, labels = crafted_embeddings(16)
    assert core_knn.loo_knn_correct(ref, labels, K).all() and core_knn.loo_knn_correct(cand, labels, K).all()
    sims, ids = core_knn.loo_neighbours(cand, K)
    majority = np.array([np.bincount(labels[row], minlength=2).argmax() for row in ids])
    assert (majority == labels).mean() == 0.5  # a majority vote would see a 0.5 drop


def test_verify_prints_and_gates_the_same_knn(bundle: Path, tmp_path: Path, capsys) -> None:
    copy, ref, cand, labels = craft(bundle, tmp_path / "deploy")
    code = cli.main(["verify", str(copy), "--seconds", "0", "--warmup", "0", "--allow-loose-gates"])
    out, err = capsys.readouterr()
    report = json.loads((copy / "device_report.json").read_text())
    entry = report["variants"]["fp32"]
    assert report["reference"]["knn"]["k"] == K
    assert entry["knn_top1"] == entry["parity"]["knn_accuracy_candidate"] == 1.0
    assert entry["knn_top1_fp32"] == entry["parity"]["knn_accuracy_reference"] == 1.0
    assert entry["knn_top1_delta"] == pytest.approx(entry["parity"]["knn_accuracy_delta"]) == 0.0
    # The cosine gates fail (the crafted engine is far from its reference), the kNN gate does not: the figure it
    # checks is the weighted one printed, not a majority vote's 0.5 drop.
    assert code == 3 and any(f.startswith("cosine_min") for f in entry["failures"])
    assert not any(f.startswith("knn_accuracy_drop") for f in entry["failures"])
    assert "| fp32 |" in out and "| 1.000 |" in out


def test_gate_report_and_verify_share_one_vote() -> None:
    """evaluate's report vote is core.knn's; compare_embeddings (export gate, verify) is core.knn's LOO kNN."""
    assert evaluate_knn.vote_scores is core_knn.vote_scores and evaluate_knn.rank_classes is core_knn.rank_classes
    ref, cand, labels = crafted_embeddings(16)
    report = compare_embeddings(ref, cand, labels, knn_k=K, knn_temperature=0.07)
    assert report.knn_accuracy_candidate == core_knn.loo_knn_correct(cand, labels, K, 0.07).mean()
    # The same neighbours through the report's path (FAISS search, self removed) give the same votes.
    sims, ids = evaluate_knn.exact_search(cand, cand, K + 1)
    keep = ids != np.arange(len(cand))[:, None]
    sims_loo = np.array([s[m][:K] for s, m in zip(sims, keep)])
    ids_loo = np.array([i[m][:K] for i, m in zip(ids, keep)])
    ranked = core_knn.rank_classes(core_knn.vote_scores(sims_loo, labels[ids_loo], 2, 0.07), 1)[:, 0]
    assert (ranked == labels).mean() == report.knn_accuracy_candidate
