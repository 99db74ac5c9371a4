"""Built-in gate floors (issue 16 point 5): a manifest whose gates are missing, null or looser than
``device.parity.GATE_FLOORS`` is refused by ``verify`` in one line naming the key, unless the user says
``--allow-loose-gates``; the exported gates clear the floors."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from edge_encoder import cli
from edge_encoder.device.parity import DEFAULT_THRESHOLDS, GATE_FLOORS, gate_floor, loose_gate_fields

from tests.export.tiny_bundle import build_tiny_bundle, copy_bundle, edit_manifest

FAST = ["--seconds", "0", "--warmup", "0"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("floors") / "deploy", variants=("fp32", "int8_cpu"))


def test_default_thresholds_are_at_least_the_floors() -> None:
    for variant, gate in DEFAULT_THRESHOLDS.items():
        assert loose_gate_fields(variant, asdict(gate)) == [], variant
    assert gate_floor("int8_trt") == GATE_FLOORS["int8"] and gate_floor("something_new") == GATE_FLOORS["int8"]


@pytest.mark.parametrize("edit, named", [
    (lambda g: g.update(min_cosine=None), "min_cosine = None"),
    (lambda g: g.update(min_top1_agreement=0.1), "min_top1_agreement = 0.1"),
    (lambda g: g.update(max_knn_accuracy_drop=0.5), "max_knn_accuracy_drop = 0.5"),
    (lambda g: g.clear(), "min_cosine = None"),
])
def test_a_loose_gate_is_refused_naming_the_key(bundle: Path, tmp_path: Path, capsys, edit, named: str) -> None:
    copy = copy_bundle(bundle, tmp_path / "deploy")
    edit_manifest(copy, lambda m: edit(m["reference"]["gates"]["fp32"]))
    code = cli.main(["verify", str(copy), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "reference.gates.fp32" in err and named in err and "--allow-loose-gates" in err
    assert not (copy / "device_report.json").exists()


def test_allow_loose_gates_lets_the_user_accept_it(bundle: Path, tmp_path: Path, capsys) -> None:
    copy = copy_bundle(bundle, tmp_path / "deploy")
    edit_manifest(copy, lambda m: m["reference"]["gates"]["int8_cpu"].update(min_cosine=None, min_top1_agreement=None))
    assert cli.main(["verify", str(copy), *FAST, "--allow-loose-gates"]) == 0, capsys.readouterr().err
