import json
import math

import numpy as np
import pytest
from edge_encoder.cli import main as cli_main
from edge_encoder.evaluate.report import (
    load_report,
    render_markdown,
    render_summary_table,
    to_jsonable,
    write_report,
)
from edge_encoder.evaluate.suite import EvalConfig, compare_engines, evaluate_engine


def _report(engine, images, name="run_a"):
    cfg = EvalConfig(knn_k=5, extra_knn=(), linear_probe=False, num_threads=1)
    ev = evaluate_engine(engine, *images, config=cfg, dataset_id="toy", cache_dir=None)
    return {
        "schema_version": 1,
        "name": name,
        "created_utc": "2026-01-01T00:00:00Z",
        "dataset": {"spec": "npz:toy.npz", "name": "toy", "num_train": 120, "num_test": 32,
                    "image_shape": [8, 8, 3], "num_classes": 4, "skipped_files": 0,
                    "class_names": ["a", "b", "c", "d"]},
        "config": {"evaluate": cfg.to_dict()},
        "timings_s": {"data": 0.1, "train": 1.0, "export": 0.5, "evaluate": 0.2, "total": 1.8},
        "train": {"runtime": {"device": "cpu", "cpu_isa": "AVX2", "precision": "fp32", "channels_last": False,
                              "threads": 2}}, "export": {},
        "metrics": compare_engines({"onnx_fp32": ev}, kinds={"onnx_fp32": "reference"}),
        "environment": {"numpy": np.__version__},
        "index_benchmark": {"rows": [
            {"bank": "real", "index": "HNSW32", "param": "efSearch=16", "recall_at_10": 0.9, "qps": 1e4,
             "build_s": 0.1, "memory_mb": 1.0},
            {"bank": "real", "index": "HNSW32", "param": "efSearch=64", "recall_at_10": 0.99, "qps": 5e3,
             "build_s": 0.1, "memory_mb": 1.0}],
            "recommendation": "HNSW32 efSearch=64"},
    }


def test_round_trip_and_markdown(engine, images, tmp_path):
    report = _report(engine, images)
    report["metrics"]["onnx_fp32"]["weird"] = np.float32(np.nan)  # numpy NaN becomes JSON null
    json_path, md_path = write_report(tmp_path / "run", report)
    loaded = load_report(tmp_path / "run")
    assert json.loads(json_path.read_text()) == loaded
    expected = to_jsonable(report)
    plots = loaded.pop("plots")
    assert loaded == expected and loaded["metrics"]["onnx_fp32"]["weird"] is None
    assert {"plots/accuracy.png", "plots/confusion_onnx_fp32.png", "plots/recall_vs_qps.png"} <= set(plots)
    for p in plots:
        assert (tmp_path / "run" / p).stat().st_size > 0
    md = md_path.read_text()
    knn = f"{report['metrics']['onnx_fp32']['knn_top1']:.4f}"
    assert "| onnx_fp32 | reference | " + knn in md
    assert "## Per-class kNN top-1" in md and "| 0 a |" in md
    assert "Recommendation: HNSW32 efSearch=64" in md
    assert "## Training settings (chosen for this machine)" in md and "| cpu_isa | AVX2 |" in md
    assert "| precision | fp32 |" in md and "| channels_last | False |" in md
    assert md == render_markdown(loaded, plots)


def test_summary_table(engine, images):
    report = _report(engine, images)
    text = render_summary_table(report)
    lines = text.splitlines()
    assert lines[0] == "run_a — toy" and "kNN top-1" in lines[1]
    assert lines[3].startswith("onnx_fp32") and f"{report['metrics']['onnx_fp32']['knn_top1']:.4f}" in lines[3]


def test_write_report_rejects_bad_reports(tmp_path):
    with pytest.raises(ValueError, match=r"missing key\(s\) \['metrics'\]"):
        write_report(tmp_path, {"schema_version": 1, "name": "x", "dataset": {}})
    with pytest.raises(ValueError, match="kind"):
        write_report(tmp_path, {"schema_version": 1, "name": "x", "dataset": {}, "metrics": {"a": {}}})


def test_compare_cli(engine, images, tmp_path, capsys):
    a, b = _report(engine, images, "run_a"), _report(engine, images, "run_b")
    b["metrics"]["onnx_fp32"]["knn_top1"] = a["metrics"]["onnx_fp32"]["knn_top1"] - 0.25
    write_report(tmp_path / "a", a)
    write_report(tmp_path / "b", b)
    assert cli_main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "report.json")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("onnx_fp32") and "kNN top-1" in line)
    assert row.split()[-1] == "-0.2500"
    assert cli_main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "no report at" in capsys.readouterr().err
    assert not math.isnan(a["metrics"]["onnx_fp32"]["knn_top1"])


def test_names_with_pipes_and_line_breaks_keep_every_table_of_report_md(engine, images, tmp_path):
    # issue 18, point 5: user-supplied names (class folders, paths, engine names) are escaped in every table cell
    from tests.core.test_markdown import assert_tables_keep_their_columns, shown

    report = _report(engine, images)
    names = ["a|b", "c\nd", "e\\", "x$\\frac$y"]  # "$...$" would be mathtext in a plot's tick labels
    report["dataset"].update(class_names=names, spec="folder:/data/x|y\nz", skipped_files=["/data/x|y/bad\n.png"])
    report["train_data"] = {"spec": "images:/t|u", "source": "every image\nunder it", "num_images": 3,
                            "excluded_eval_images": 2, "excluded_eval_duplicates": 1}
    report["metrics"] = {"my|engine\n2": report["metrics"]["onnx_fp32"]}
    report["timings_s"]["odd|stage"] = 1.0
    _, md_path = write_report(tmp_path / "run", report)
    plots = json.loads((tmp_path / "run" / "report.json").read_text())["plots"]
    assert "plots/confusion_my_engine_2.png" in plots  # drawn with the odd names as plain text
    tables = assert_tables_keep_their_columns(md_path.read_text())
    per_class = next(t for t in tables if t[0][0] == "class")
    assert [row[0] for row in per_class[1:]] == [f"{i} {shown(n)}" for i, n in enumerate(names)]
    assert per_class[0] == ["class", "my|engine\\n2"]
    train_data = dict(row for row in next(t for t in tables if ["excluded_eval_duplicates", "1"] in t)[1:])
    assert train_data["excluded_eval_images"] == "2" and train_data["spec"] == "images:/t|u"
