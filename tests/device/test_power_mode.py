"""``edge-encoder verify`` records the Jetson power mode (``nvpmodel -q``) and board model beside its latencies.

The parser is fed crafted ``nvpmodel -q`` outputs; a fake ``nvpmodel`` script first on PATH stands in for the real
one (this machine is no Jetson), and its mode must end up in ``device_report.json`` and ``device_report.md``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from edge_encoder import cli
from edge_encoder.device import verify
from edge_encoder.device.verify import REPORT_JSON, REPORT_MD, device_info, parse_nvpmodel, render_markdown

from tests.export.tiny_bundle import build_tiny_bundle


@pytest.mark.parametrize(("text", "expected"), [
    # What `nvpmodel -q` prints on a Jetson (JetPack 6, AGX Orin): the mode's name, then its ID.
    ("NV Power Mode: MAXN\n0\n", {"name": "MAXN", "id": 0}),
    ("NV Power Mode: 15W\n1\n", {"name": "15W", "id": 1}),
    ("NV Power Mode: MAXN_SUPER\n2\n", {"name": "MAXN_SUPER", "id": 2}),
    # --verbose: NVPM lines first, the mode line prefixed.
    ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: parsing done for /etc/nvpmodel.conf\n"
     "NV Fan Mode:quiet\nNVPM VERB: Current mode: NV Power Mode: MODE_15W_6CORE\n2\n"
     "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH /sys/devices/system/cpu/cpu0/online: REAL_VAL: 1 CONF_VAL: 1\n",
     {"name": "MODE_15W_6CORE", "id": 2}),
    ("NV Power Mode: MODE_10W\r\n3\r\n", {"name": "MODE_10W", "id": 3}),  # CRLF
    ("NV Power Mode: 25W\n\n  4  \n", {"name": "25W", "id": 4}),  # blank line, spaces
    ("NV Power Mode: MAXN\n", {"name": "MAXN", "id": None}),  # no ID line
    ("NV Power Mode: MAXN\nNVPM WARN: something\n", {"name": "MAXN", "id": None}),  # no number after it
    ("", None),
    ("NV Power Mode:\n0\n", None),  # no name
    ("NVPM ERROR: failed to read PARAM CPU_ONLINE\n", None),
    ("nvpmodel: command failed\n0\n", None),
])
def test_parse_nvpmodel(text: str, expected: dict | None) -> None:
    assert parse_nvpmodel(text) == expected


def fake_nvpmodel(folder: Path, script: str) -> Path:
    """An executable ``nvpmodel`` shell script in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nvpmodel"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def put_first_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("power") / "bundle", variants=("fp32",))


@pytest.mark.skipif(os.name != "posix", reason="the fake nvpmodel is a shell script")
def test_fake_nvpmodel_on_path_ends_up_in_the_report(capsys, monkeypatch, tmp_path: Path, fp32_bundle: Path) -> None:
    fake_nvpmodel(tmp_path / "bin", 'if [ "$1" = "-q" ]; then printf "NV Power Mode: MAXN\\n0\\n"; else exit 9; fi\n')
    put_first_on_path(monkeypatch, tmp_path / "bin")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(verify, "DEVICE_TREE_MODEL", model)
    out = tmp_path / "report"
    out.mkdir()

    code = cli.main(["verify", str(fp32_bundle), "--seconds", "0", "--warmup", "0", "--report-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    device = json.loads((out / REPORT_JSON).read_text())["device"]
    assert device["power_mode"] == {"name": "MAXN", "id": 0}
    assert device["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    header = next(line for line in (out / REPORT_MD).read_text().splitlines() if line.startswith("- device:"))
    assert header.endswith("; board: NVIDIA Jetson AGX Orin Developer Kit; power mode: MAXN (0)"), header


@pytest.mark.skipif(os.name != "posix", reason="the fake nvpmodel is a shell script")
@pytest.mark.parametrize("script", [
    "echo 'NVPM ERROR: failed to open /var/lib/nvpmodel/status' >&2; exit 1\n",  # fails
    "exit 0\n",  # prints nothing
    "exec sleep 30\n",  # hangs: cut at NVPMODEL_TIMEOUT_S (exec: the kill reaches the sleeper)
])
def test_a_failing_or_hanging_nvpmodel_is_not_recorded_and_never_fails(monkeypatch, tmp_path: Path,
                                                                        script: str) -> None:
    fake_nvpmodel(tmp_path / "bin", script)
    put_first_on_path(monkeypatch, tmp_path / "bin")
    monkeypatch.setattr(verify, "NVPMODEL_TIMEOUT_S", 0.5)
    assert device_info("onnxruntime")["power_mode"] is None


def test_without_nvpmodel_and_device_tree_nothing_is_recorded(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvpmodel (nor nvidia-smi)
    monkeypatch.setattr(verify, "DEVICE_TREE_MODEL", tmp_path / "no-such-file")
    info = device_info("onnxruntime")
    assert info["power_mode"] is None and info["board"] is None


def test_markdown_of_a_report_without_the_new_fields() -> None:
    """A report written before the power mode was recorded still renders (no board, no mode in the header)."""
    report = {"bundle": "/x/deploy", "backend": "onnxruntime", "passed": True, "created": "2026-01-01T00:00:00+00:00",
              "device": {"cpu": "cpu", "cpu_count": 4, "gpu": None, "platform": "Linux", "machine": "x86_64"},
              "versions": {"onnxruntime": "1.20", "tensorrt": None, "numpy": "2.0", "python": "3.11"},
              "reference": {"count": 8, "knn_top1_fp32": None, "knn": {"k": 20}},
              "timing": {"batch_sizes": [1]}, "variants_requested": [], "variants": {}, "files": [],
              "problems": [], "gate_failures": []}
    header = next(line for line in render_markdown(report).splitlines() if line.startswith("- device:"))
    assert header == "- device: cpu (4 CPUs); GPU: none; Linux"
