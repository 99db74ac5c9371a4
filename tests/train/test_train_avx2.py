"""Issue 18: channels_last at small widths on CPUs whose oneDNN runs below AVX-512.

oneDNN's AVX2 weight gradient of a stride-2 1x1 convolution on channels_last tensors of 2..7 input channels (the
layer2 shortcut of a ResNet-18 of width < 8) corrupts the heap at one thread and hangs or computes wrong gradients
at two. ``train.channels_last = "auto"`` turns channels_last off there, logs it once and records it in the run's
start event; an explicit ``true`` is obeyed with a warning. The subprocess test trains the tiny pipeline config
under AVX2 emulation (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), where it aborted before the fix.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable

import edge_encoder.train.loop as loop
import numpy as np
import pytest
import torch
from edge_encoder.train.backbones import BackboneConfig
from edge_encoder.train.config import TrainConfig, train_config_from_dict
from edge_encoder.train.loop import resolve_channels_last, train_moco
from edge_encoder.train.moco import build_moco

TINY = Path(__file__).resolve().parents[1] / "pipeline" / "tiny.toml"
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CPU = torch.device("cpu")


def _model(width: int, arch: str = "resnet18") -> torch.nn.Module:
    return build_moco(BackboneConfig(arch=arch, width=width), method="moco_v2", proj_hidden_dim=0, proj_dim=16,
                      pred_hidden_dim=0, queue_size=16, temperature=0.2, symmetric=False, split_bn_groups=1)


@pytest.mark.parametrize("width, arch, below, setting, expected, hazard", [
    (4, "resnet18", True, "auto", False, True),    # the issue: AVX2, width 4 -> off
    (7, "resnet34", True, "auto", False, True),
    (8, "resnet18", True, "auto", True, False),    # 8 input channels and more are safe on AVX2: kept on
    (12, "resnet18", True, "auto", True, False),
    (4, "resnet18", False, "auto", True, False),   # AVX-512: no hazard at any width
    (4, "resnet18", True, True, True, True),       # an explicit true is obeyed (the caller warns)
    (16, "resnet18", True, False, False, False),   # an explicit false is obeyed
    (2, "resnet50", True, "auto", True, False),    # bottleneck: the strided 1x1 convs see 4 * width channels
    (1, "resnet50", True, "auto", False, True),
])
def test_resolve_channels_last(monkeypatch: pytest.MonkeyPatch, width: int, arch: str, below: bool,
                               setting: str | bool, expected: bool, hazard: bool) -> None:
    monkeypatch.setattr(loop, "onednn_below_avx512", lambda: below)
    on, why = resolve_channels_last(setting, CPU, _model(width, arch))
    assert on is expected and (why is not None) is hazard
    if hazard:
        assert "1x1 conv" in why and "AVX-512" in why


def test_no_hazard_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "onednn_below_avx512", lambda: True)
    assert resolve_channels_last("auto", torch.device("cuda"), _model(4)) == (True, None)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 ISA caps")
@pytest.mark.parametrize("env, below", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
    ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, None),  # not capped: whatever the CPU has
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
])
def test_onednn_below_avx512_reads_the_isa_cap(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                               below: bool | None) -> None:
    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    native = not torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert loop.onednn_below_avx512() is (native if below is None else below)


def test_channels_last_setting_is_checked() -> None:
    assert TrainConfig().channels_last == "auto"
    assert train_config_from_dict({"channels_last": True}).channels_last is True
    with pytest.raises(ValueError, match="train.channels_last"):
        train_config_from_dict({"channels_last": "yes"})


def test_explicit_true_warns_and_auto_logs_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                               tmp_path: Path, tiny_images: np.ndarray,
                                               tiny_config: Callable[..., TrainConfig]) -> None:
    """In-process, with the hazard pretended (no AVX2 kernel runs here): the decision is logged and recorded, and a
    run started with ``true`` resumes under ``"auto"`` (channels_last is a layout, not part of the recipe)."""
    monkeypatch.setattr(loop, "onednn_below_avx512", lambda: True)
    caplog.set_level("INFO", logger="edge_encoder.train.loop")
    train_moco(tiny_images, tiny_config(channels_last=False, epochs=1), tmp_path / "off",
               preprocess_mean=MEAN, preprocess_std=STD, progress=False)
    assert not _said(caplog)  # an explicit false: nothing to say
    train_moco(tiny_images, tiny_config(epochs=1), tmp_path / "auto", preprocess_mean=MEAN, preprocess_std=STD,
               progress=False)
    off = _said(caplog)
    assert len(off) == 1 and off[0].getMessage().startswith("channels_last off: width 4")
    assert "issue 18" in off[0].getMessage() and off[0].levelname == "INFO"
    assert _start(tmp_path / "auto")["channels_last"] is False
    caplog.clear()
    monkeypatch.setattr(loop, "onednn_below_avx512", lambda: False)  # the run is started where it is safe ...
    train_moco(tiny_images, tiny_config(channels_last=True), tmp_path / "on", preprocess_mean=MEAN,
               preprocess_std=STD, progress=False, stop_at_step=4)
    assert _start(tmp_path / "on")["channels_last"] is True and not _said(caplog)
    monkeypatch.setattr(loop, "onednn_below_avx512", lambda: True)  # ... and resumed below AVX-512 under "auto"
    result = train_moco(tiny_images, tiny_config(epochs=2), tmp_path / "on", preprocess_mean=MEAN, preprocess_std=STD,
                        progress=False)
    assert result.resumed_from_step == 4 and _start(tmp_path / "on")["channels_last"] is False
    caplog.clear()  # an explicit true is obeyed with a warning (the run is only built: on AVX2 it would crash)
    run = loop._build_run(tiny_images, tiny_config(channels_last=True), tmp_path / "warn", CPU, MEAN, STD)
    warned = _said(caplog)
    assert len(warned) == 1 and warned[0].getMessage().startswith("channels_last on as configured")
    assert warned[0].levelname == "WARNING" and run.runtime["channels_last"] is True


def _said(caplog: pytest.LogCaptureFixture) -> list:
    return [r for r in caplog.records if "channels_last" in r.getMessage()]


def _start(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "start"][-1]


@functools.lru_cache(maxsize=1)
def _avx2_runs_here() -> bool:
    """Whether ``AVX2_ENV`` caps this machine at AVX2 (false off x86 and on CPUs without AVX2)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env={**os.environ, **AVX2_ENV}, capture_output=True, text=True, timeout=120)
    return probe.stdout.strip() == "AVX2"


@pytest.mark.parametrize("threads, width, expected", [
    (1, 4, False),  # the command: exit 134 before the fix; about 5 s
    pytest.param(2, 4, False, marks=pytest.mark.slow),  # a hang or wrong gradients before the fix
    pytest.param(1, 8, True, marks=pytest.mark.slow),   # width 8 keeps channels_last on AVX2, and trains
])
def test_tiny_config_trains_under_avx2_emulation(tmp_path: Path, threads: int, width: int, expected: bool) -> None:
    """``edge-encoder train --config tests/pipeline/tiny.toml`` under AVX2 emulation finishes, in fp32 (``"auto"``
    bf16 is off below AVX-512), with channels_last off at width 4 (logged once) and on at width 8."""
    if not _avx2_runs_here():
        pytest.skip("this CPU cannot be capped at AVX2")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | AVX2_ENV
    cmd = [sys.executable, "-m", "edge_encoder.cli", "train", "--config", str(TINY), "--runs-dir", str(tmp_path),
           "--name", "run", "--no-progress", "--set", f"train.num_threads={threads}", "--set", f"train.width={width}"]
    try:
        result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("training hung under AVX2 emulation (> 240 s; it takes about 5 s)")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    start = _start(tmp_path / "run" / "train")
    assert start["channels_last"] is expected and start["precision"] == "fp32", start
    logged = [line for line in result.stderr.splitlines() if "channels_last" in line]
    if expected:
        assert not logged, logged
    else:
        assert len(logged) == 1 and "channels_last off: width 4" in logged[0] and "issue 18" in logged[0], logged
