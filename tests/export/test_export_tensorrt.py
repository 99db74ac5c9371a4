from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from edge_encoder.export.tensorrt import (
    EngineKey,
    EngineKeyMismatch,
    check_engine_key,
    main,
    rebuild_command,
)

PLAN = Path("runs/demo/deploy/tensorrt/encoder_int8_trt.plan")
HERE = EngineKey(tensorrt="10.3.0", gpu_name="Orin", compute_capability="8.7")


def test_matching_key_is_accepted() -> None:
    check_engine_key({"tensorrt": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}, HERE, PLAN)


@pytest.mark.parametrize("field, value", [("tensorrt", "10.7.0"), ("gpu_name", "NVIDIA H100"), ("compute_capability", "9.0")])
def test_mismatching_key_is_refused_with_rebuild_command(field, value) -> None:
    stored = {"tensorrt": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", field: value}
    with pytest.raises(EngineKeyMismatch) as err:
        check_engine_key(stored, HERE, PLAN)
    message = str(err.value)
    assert field in message and value in message
    assert "python -m edge_encoder.export.tensorrt runs/demo/deploy --variant int8_trt" in message


def test_rebuild_command() -> None:
    assert rebuild_command(PLAN) == "python -m edge_encoder.export.tensorrt runs/demo/deploy --variant int8_trt"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_cli_without_tensorrt_exits_2(tmp_path, capsys) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert main([str(tmp_path)]) == 2
    assert "tensorrt is not installed" in capsys.readouterr().err
