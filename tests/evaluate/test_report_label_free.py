"""A run without a labelled evaluation set: report.json carries the label-free section and says accuracy was not
measured; report.md and the terminal table say it in words."""

from __future__ import annotations

import json
from pathlib import Path

from edge_encoder.evaluate.report import (
    render_markdown,
    render_summary_table,
    write_report,
)


def _label_free_report() -> dict:
    engines = {"pytorch_fp32": {"kind": "reference", "dim": 32, "alignment": 0.12, "uniformity": -3.1,
                                "effective_rank": 20.5, "dim_std_sqrt_d_mean": 0.9, "dead_dim_fraction": 0.0,
                                "embed_images_per_s": 900.0},
               "onnx_fp32": {"kind": "engine", "dim": 32, "alignment": 0.12, "uniformity": -3.1,
                             "effective_rank": 20.5, "dim_std_sqrt_d_mean": 0.9, "dead_dim_fraction": 0.0,
                             "reference_cosine_min": 0.99999, "embed_images_per_s": 1500.0}}
    return {"schema_version": 1, "name": "flat", "dataset": {"spec": "folder:/x", "name": "folder:x", "labelled": False,
                                                              "num_train": 90, "num_test": 10},
            "metrics": {}, "accuracy_measured": False,
            "accuracy_note": "no labelled evaluation set was given (--eval-data)",
            "train_data": {"spec": "folder:/x", "num_images": 90, "labels_used": False, "held_out": 10},
            "label_free": {"images": 10, "source": "a seeded slice", "positive_pairs": "flips", "dead_ratio": 0.1,
                           "engines": engines}}


def test_label_free_report_says_accuracy_was_not_measured(tmp_path: Path) -> None:
    json_path, md_path = write_report(tmp_path, _label_free_report())
    data = json.loads(json_path.read_text())
    assert data["accuracy_measured"] is False and data["label_free"]["engines"]["onnx_fp32"]["alignment"] == 0.12
    md = md_path.read_text()
    sentence = "Accuracy was not measured: no labelled evaluation set was given (--eval-data)."
    assert f"**{sentence}**" in md and md.index(sentence) < md.index("## Dataset")
    assert "## Label-free measures" in md and "## Metrics" not in md and "| onnx_fp32 | engine | 0.1200" in md
    assert "## Training images" in md and "| labels_used | False |" in md
    table = render_summary_table(data)
    assert sentence in table and "uniformity" in table and "kNN top-1" not in table


def test_labelled_report_keeps_its_metrics_and_adds_label_free() -> None:
    report = _label_free_report()
    report.update(accuracy_measured=True, accuracy_note=None,
                  metrics={"onnx_fp32": {"kind": "engine", "knn_top1": 0.5}})
    md = render_markdown(report)
    assert "Accuracy was not measured" not in md and "## Metrics" in md and "## Label-free measures" in md
    assert "kNN top-1" in render_summary_table(report)
