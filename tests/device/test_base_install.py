"""The base install (``pip install edge-encoder onnxruntime``: NumPy, Pillow, tqdm and ONNX Runtime, no torch) runs
the device commands on a real bundle, the same as the full install does.

The wheel is built from a copy of the checkout (building in place would write ``build/`` into the shared tree) and
installed, with ``onnxruntime``, into a fresh venv without system site packages (pip's cache makes reruns fast).
The bundle is exported here with the full install. The base venv's size is printed (``du`` of its site-packages).
Every subprocess has a timeout, so a stuck pip or command fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from edge_encoder import cli

from tests.export.tiny_bundle import build_tiny_bundle

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", ".cache", ".whl", "results", ".gl")
TRAINING_MODULES = ("torch", "torchvision", "onnx", "sklearn")
PIP_TIMEOUT_S = 420  # a cold pip cache downloads numpy, pillow and onnxruntime (~70 MB)
COMMAND_TIMEOUT_S = 180

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="venv layout (bin/) of POSIX")]


def run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=timeout,
                          **kwargs)


def clean_env() -> dict[str, str]:
    """This process's environment without what would leak the full install into the base venv's processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                             "PYTHONSTARTUP", "PYTHONUSERBASE")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def tree_bytes(folder: Path) -> int:
    """What ``du`` counts for ``folder``: the allocated blocks of every file (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
    return total


def write_images(folder: Path) -> Path:
    """A few PNG and JPEG files of odd sizes and suffix cases, one in a subfolder (seeded)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i, (h, w) in enumerate([(20, 24), (16, 16), (33, 17)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"png_{i}.png")
        Image.fromarray(rng.integers(0, 256, (w, h, 3), dtype=np.uint8)).save(folder / "sub" / f"jpg_{i}.JPG",
                                                                               format="JPEG", quality=90)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "photo.jpeg", format="JPEG")
    return folder


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the project wheel (its base dependencies) and onnxruntime."""
    tmp = tmp_path_factory.mktemp("base_install")
    env = clean_env()
    started = time.perf_counter()
    source = shutil.copytree(PROJECT_ROOT, tmp / "src", ignore=NOT_SOURCE)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", source], PIP_TIMEOUT_S,
                env=env)
    assert built.returncode == 0, f"building the wheel failed:\n{built.stderr[-3000:]}"
    (wheel,) = (tmp / "dist").glob("edge_encoder-*.whl")
    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", venv], 120, env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    installed = run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--timeout", "30", "--retries", "2",
                     wheel, "onnxruntime"], PIP_TIMEOUT_S, env=env)
    assert installed.returncode == 0, (f"pip install WHEEL onnxruntime failed (is PyPI or pip's cache reachable?):\n"
                                       f"{installed.stderr[-3000:]}")
    print(f"\nbase venv ready in {time.perf_counter() - started:.1f} s")
    return venv


def base_command(venv: Path, *argv: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The base venv's ``edge-encoder`` console script."""
    return run([venv / "bin" / "edge-encoder", *argv], COMMAND_TIMEOUT_S, cwd=cwd, env=clean_env())


def test_base_venv_has_no_training_stack_and_runs_the_wheel(base_venv: Path, tmp_path: Path, capsys) -> None:
    python = base_venv / "bin" / "python"
    torch = run([python, "-c", "import torch"], 60, cwd=tmp_path, env=clean_env())
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr, torch.stderr[-2000:]
    probe = ("import importlib.util, edge_encoder.cli as c\n"
             f"print([m for m in {TRAINING_MODULES!r} if importlib.util.find_spec(m) is not None])\n"
             "print(c.__file__)\n")
    found = run([python, "-c", probe], 60, cwd=tmp_path, env=clean_env())
    assert found.returncode == 0, found.stderr[-2000:]
    present, cli_file = found.stdout.strip().splitlines()
    assert present == "[]", f"the base install holds training modules: {present}"
    assert Path(cli_file).is_relative_to(base_venv), f"edge_encoder imported from {cli_file}, not the wheel"
    freeze = run([python, "-m", "pip", "list", "--format=freeze"], 60, env=clean_env())
    site = next((base_venv / "lib").glob("python3*/site-packages"))
    sizes = sorted(((tree_bytes(p), p.name) for p in site.iterdir()), reverse=True)
    total = tree_bytes(site)
    tooling = sum(b for b, n in sizes if n.split("-")[0] in ("pip", "setuptools", "_distutils_hack"))
    with capsys.disabled():
        print(f"\nbase venv site-packages: {total / 2**20:.0f} MiB (du), {(total - tooling) / 2**20:.0f} MiB without "
              f"pip/setuptools; largest: " + ", ".join(f"{n} {b / 2**20:.0f} MiB" for b, n in sizes[:5]))
        print("base venv packages: " + " ".join(freeze.stdout.split()))


def test_verify_embed_and_train_on_the_base_install(base_venv: Path, tmp_path: Path, capsys) -> None:
    bundle = build_tiny_bundle(tmp_path / "bundle")  # the full install exports it
    images = write_images(tmp_path / "images")
    work = tmp_path / "work"  # outside the checkout: nothing on the path but the venv's
    work.mkdir()

    verified = base_command(base_venv, "verify", bundle, "--seconds", "0", "--warmup", "0", "--report-dir", work,
                            cwd=work)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-3000:]
    assert (work / "device_report.json").is_file() and "| fp32 | pass |" in verified.stdout, verified.stdout

    embedded = base_command(base_venv, "embed", bundle, "--images", images, "--out", work / "base.npz",
                            "--no-progress", cwd=work)
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    assert cli.main(["embed", str(bundle), "--images", str(images), "--out", str(work / "full.npz"),
                     "--no-progress"]) == 0, capsys.readouterr().err
    base, full = np.load(work / "base.npz"), np.load(work / "full.npz")
    assert base["paths"].tolist() == full["paths"].tolist() == [
        "photo.jpeg", "png_0.png", "png_1.png", "png_2.png", "sub/jpg_0.JPG", "sub/jpg_1.JPG", "sub/jpg_2.JPG"]
    assert base["embeddings"].shape == full["embeddings"].shape
    np.testing.assert_allclose(base["embeddings"], full["embeddings"], rtol=0, atol=1e-5)

    trained = base_command(base_venv, "train", "--config", "digits_cpu", cwd=work)
    assert trained.returncode == 2, trained.stdout[-2000:] + trained.stderr[-2000:]
    lines = trained.stderr.strip().splitlines()
    assert len(lines) == 1 and "edge-encoder[train" in lines[0], trained.stderr
