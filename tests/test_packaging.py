"""The installed package: a wheel built from the checkout holds one top-level name, ``edge_encoder``, and its
presets; the project works beside another distribution's top-level ``evaluate`` (Hugging Face's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.commands.conftest import CONSOLE_SCRIPT, QUICK, export_onnx, tiny_cnn

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What the checkout holds that is not source (build outputs, environments, caches, runs).
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", ".cache", ".whl", "results")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (building in place would write build/ into the shared tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(PROJECT_ROOT, tmp / "src", ignore=NOT_SOURCE)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (found,) = (tmp / "dist").glob("edge_encoder-*.whl")
    return found


def test_wheel_installs_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names} - {n.split("/")[0] for n in names if ".dist-info/" in n}
    assert top_level == {"edge_encoder"}, sorted(top_level)
    for module in ("cli.py", "pipeline.py", "commands/evaluate.py", "evaluate/knn.py", "export/engines.py",
                   "train/loop.py", "imagedata/folder.py", "core/files.py"):
        assert f"edge_encoder/{module}" in names, module
    presets = sorted(n for n in names if n.startswith("edge_encoder/configs/"))
    assert presets == sorted(f"edge_encoder/configs/{p.name}" for p in (PROJECT_ROOT / "configs").glob("*.toml"))
    assert not any(n.startswith(("edge_encoder/tests/", "edge_encoder/benchmarks/")) for n in names)


def test_installed_wheel_finds_its_default_preset_and_presets_by_name(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                             str(wheel)], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = (
        "import edge_encoder.settings as p\n"
        "from edge_encoder.commands import options, run\n"
        f"assert p.__file__.startswith({str(site)!r}), p.__file__  # the wheel's copy, not the checkout\n"
        "assert p.DEFAULT_CONFIG.is_file() and p.DEFAULT_CONFIG.is_relative_to(p.CONFIG_DIR.parent), p.DEFAULT_CONFIG\n"
        "for argv, name in (([], 'digits_cpu'), (['--config', 'cifar10_cpu'], 'cifar10_cpu')):\n"
        "    settings = options.run_settings(run.build_parser().parse_args(argv))\n"
        "    assert settings.name == name, settings.name\n"
        "print(p.DEFAULT_CONFIG)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(site / "edge_encoder" / "configs" / "digits_cpu.toml")


def test_works_beside_another_distributions_top_level_evaluate(tmp_path: Path) -> None:
    """Hugging Face's ``evaluate`` (faked here) first on the path, cwd outside the checkout: ``import evaluate`` is
    theirs, and edge_encoder's evaluation still imports and runs, through the console script too."""
    fake = tmp_path / "other_site" / "evaluate"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("HF_EVALUATE = True\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    probe = ("import evaluate\n"
             "assert evaluate.HF_EVALUATE, evaluate.__file__\n"
             "from edge_encoder.evaluate.knn import knn_accuracy\n"
             "from edge_encoder.evaluate.suite import evaluate_engine\n"
             "import edge_encoder.evaluate\n"
             "assert edge_encoder.evaluate.__name__ != evaluate.__name__\n"
             "print(evaluate.__file__)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(fake / "__init__.py")
    result = subprocess.run([str(CONSOLE_SCRIPT), "evaluate", "--help"], cwd=work, env=env, capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: edge-encoder evaluate")
    model = export_onnx(tiny_cnn(), tmp_path / "cnn.onnx", 16)
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "evaluate", str(model), "--dataset", "digits", "--mean", "0.5,0.5,0.5", "--std",
         "0.25,0.25,0.25", "--set", "data.max_train=100", "--set", "data.max_test=40", *QUICK, "--runs-dir", "runs"],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "runs" / "evaluate-cnn" / "report.json").is_file() and "cnn" in result.stdout
