"""The prepared GPU check script runs its whole logic on a CPU (tiny model and data), so a lent GPU machine's
minutes are not spent discovering a typo. The CUDA-only parts (pinned copies, bf16 on the GPU) need the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu(tmp_path: Path, tiny_npz: Path) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--data", str(tiny_npz), "--device", "cpu", "--smoke",
         "--out", str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    errors = {k: v["error"] for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert result.returncode == 0 and not errors, (errors, result.stderr[-2000:])
    assert report["train_gpu"]["epochs"] == 2 and report["train_gpu"]["images_per_s"] > 0
    assert 0.0 <= report["knn"]["trained_knn_top1"] <= 1.0 and 0.0 <= report["knn"]["random_init_linear_top1"] <= 1.0
    assert report["train_cpu_aug_fp32"]["images_per_s"] > 0 and report["train_cpu_aug_fp32"]["gpu_resident_bf16_speedup"] > 0
    assert report["inference"]["pytorch_bf16_b64"]["images_per_s"] > 0
    assert report["inference"]["onnxruntime_cpu_int8"]["images_per_s"] > 0


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path: Path, tiny_npz: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--data", str(tiny_npz)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "sees no CUDA device" in result.stderr
