"""Foreign ONNX encoders as ordinary exports write them (issue 18): a static batch (``torch.onnx.export`` without
``dynamic_axes``: batch 1) runs in chunks of the graph's batch and gives the figures of the same model with a
dynamic batch; an output that cannot be an embedding is refused when the file is opened (one line, exit 2, no run
folder left), and so is one that fails at run time."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from edge_encoder.device.engines import OnnxRuntimeEngine
from onnx import TensorProto, helper, numpy_helper

from tests.commands.conftest import QUICK, call

SUBSET = ["--set", "data.max_train=120", "--set", "data.max_test=40"]
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
NORM_ARGS = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


@pytest.fixture(scope="module")
def resnet18_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest ``resnet18_onnx`` model (torchvision ResNet-18, seed 0, fc = Identity, 32 px) exported as
    ``torch.onnx.export`` writes it without ``dynamic_axes``: input ``[1, 3, 32, 32]``, output ``[1, 512]``."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    path = tmp_path_factory.mktemp("resnet18_static") / "resnet18_static.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"])
    return path


def _pooled_graph(path: Path, in_batch: int | str, tail: str = "identity") -> Path:
    """A float NCHW ``[in_batch, 3, 8, 8]`` graph whose embedding is the per-channel mean (``(N, 3)``); ``tail``:
    ``identity``, ``reshape1`` (a hard-coded ``Reshape [1, -1]``: output ``[1, ?]``), ``zero`` (a ``Slice`` to 0
    features: ``[N, 0]``), ``nan`` (NaN added to every value)."""
    inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0)]
    if tail == "reshape1":
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["pooled", "shape"], ["output"]))
    elif tail == "zero":
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("s", [0]), ("e", [0]), ("a", [1]))]
        nodes.append(helper.make_node("Slice", ["pooled", "s", "e", "a"], ["output"]))
    elif tail == "nan":
        inits.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
        nodes.append(helper.make_node("Add", ["pooled", "nan"], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", ["pooled"], ["output"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [in_batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _channel_means(images: np.ndarray) -> np.ndarray:
    x = (images.astype(np.float64) / 255 - 0.5) / 0.25
    m = x.mean(axis=(1, 2))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _batch_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "at a time" in r.getMessage()]


# ------------------------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize("in_batch, tail, graph_batch", [(3, "identity", 3), ("N", "reshape1", 1),
                                                         ("N", "identity", None)])
def test_graph_batch_runs_in_chunks_and_keeps_the_real_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            in_batch: int | str, tail: str,
                                                            graph_batch: int | None) -> None:
    path = _pooled_graph(tmp_path / "m.onnx", in_batch, tail)
    images = np.random.default_rng(0).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)  # 7 = 3 + 3 + 1 padded
    caplog.set_level(logging.INFO, logger="edge_encoder.device.engines")
    with OnnxRuntimeEngine(path, preprocess=NORM, l2_normalize_output=True) as engine:
        assert engine.graph_batch == graph_batch
        first, second = engine.embed(images), engine.embed(images[:2])
    assert first.shape == (7, 3) and second.shape == (2, 3)
    np.testing.assert_allclose(first, _channel_means(images), atol=1e-5)
    np.testing.assert_allclose(second, first[:2], atol=1e-6)
    logs = _batch_logs(caplog)
    if graph_batch is None:
        assert not logs
    else:  # said once per engine, however many calls
        assert len(logs) == 1 and f"{graph_batch} at a time" in logs[0] and str(path) in logs[0]


@pytest.mark.parametrize("in_batch, tail, message", [
    ("N", "zero", r"output 'output' \(tensor\(float\) \['N', 0\]\) has a zero-width feature axis"),
    (2, "reshape1", r"output 'output' \(tensor\(float\) \[1, 6\]\) has its first dimension \(rows\) fixed at 1, but "
                    r"the input's static batch is 2"),
])
def test_unusable_outputs_are_refused_at_open_naming_file_and_shape(tmp_path: Path, in_batch: int | str, tail: str,
                                                                    message: str) -> None:
    path = _pooled_graph(tmp_path / f"{tail}.onnx", in_batch, tail)
    with pytest.raises(ValueError, match=message) as caught:
        OnnxRuntimeEngine(path, preprocess=NORM, l2_normalize_output=True)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------ the commands


def test_static_batch_resnet18_gives_the_dynamic_batch_figures(capsys, caplog: pytest.LogCaptureFixture,
                                                               resnet18_onnx: Path, resnet18_static: Path,
                                                               image_tree: Path, tmp_path: Path) -> None:
    """The acceptance of issue 18: evaluate and embed of the batch-1 export equal those of the dynamic export."""
    import onnxruntime as ort

    static_input = ort.InferenceSession(str(resnet18_static)).get_inputs()[0].shape
    assert static_input == [1, 3, 32, 32]  # the ordinary export really has a static batch
    caplog.set_level(logging.INFO, logger="edge_encoder.device.engines")
    reports = {}
    for label, model in (("dynamic", resnet18_onnx), ("static", resnet18_static)):
        code, _, err = call(capsys, "evaluate", model, "--dataset", "digits", "--preset", "imagenet", *SUBSET, *QUICK,
                            "--runs-dir", tmp_path / "runs", "--name", label)
        assert code == 0, err[-2000:]
        reports[label] = json.loads((tmp_path / "runs" / label / "report.json").read_text())["metrics"]
    assert len(_batch_logs(caplog)) == 1  # the static engine said it once; the dynamic one never
    dynamic, static = reports["dynamic"]["resnet18"], reports["static"]["resnet18_static"]
    for key in ("dim", "knn_top1", "knn_top5", "recall_at_1", "map_at_r", "confusion_matrix"):
        assert static[key] == dynamic[key], key
    embeddings = {}
    for label, model in (("dynamic", resnet18_onnx), ("static", resnet18_static)):
        out = tmp_path / f"{label}.npz"
        code, _, err = call(capsys, "embed", model, "--images", image_tree, "--preset", "imagenet", "--batch-size",
                            "4", "--out", out, "--no-progress")
        assert code == 0, err[-2000:]
        embeddings[label] = np.load(out)
    assert embeddings["static"]["embeddings"].shape == (6, 512)
    np.testing.assert_allclose(embeddings["static"]["embeddings"], embeddings["dynamic"]["embeddings"], atol=1e-5)
    assert embeddings["static"]["paths"].tolist() == embeddings["dynamic"]["paths"].tolist()


@pytest.mark.parametrize("tail, in_batch, names", [("zero", "N", "['N', 0]"), ("reshape1", 2, "[1, 6]")])
def test_unusable_output_is_one_line_exit_2_and_leaves_nothing(capsys, tmp_path: Path, image_tree: Path, tail: str,
                                                               in_batch: int | str, names: str) -> None:
    model = _pooled_graph(tmp_path / f"{tail}.onnx", in_batch, tail)
    runs = tmp_path / "runs"
    code, _, err = call(capsys, "evaluate", model, "--dataset", "digits", *NORM_ARGS, "--image-size", "8", *SUBSET,
                        *QUICK, "--runs-dir", runs)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(model) in lines[0] and names in lines[0], err
    assert not runs.exists()
    out = tmp_path / "e.npz"
    code, _, err = call(capsys, "embed", model, "--images", image_tree, *NORM_ARGS, "--image-size", "8", "--out", out,
                        "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(model) in lines[0] and names in lines[0], err
    assert not out.exists()


def test_a_failure_while_evaluating_removes_only_the_empty_folders_it_made(capsys, tmp_path: Path) -> None:
    model = _pooled_graph(tmp_path / "nan.onnx", "N", "nan")
    common = ["evaluate", model, "--dataset", "digits", *NORM_ARGS, "--image-size", "8", *SUBSET, *QUICK]
    runs = tmp_path / "runs"
    code, _, err = call(capsys, *common, "--runs-dir", runs, "--name", "x")
    assert code == 2 and "NaN" in err and not runs.exists()  # runs/ too: this evaluation made it
    (runs / "keep").mkdir(parents=True)
    (runs / "mine" / "notes.txt").parent.mkdir()
    (runs / "mine" / "notes.txt").write_text("the user's")
    for name in ("x", "mine"):
        code, _, err = call(capsys, *common, "--runs-dir", runs, "--name", name)
        assert code == 2, err
    assert sorted(p.name for p in runs.iterdir()) == ["keep", "mine"]  # x removed; what existed kept
    assert (runs / "mine" / "notes.txt").read_text() == "the user's"
