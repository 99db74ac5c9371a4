"""The same bad input is refused at the same point by every command that takes it: one line, exit 2, the same
message, and nothing written (no run folder, no bundle, no embeddings file) - the refusal comes before any work.

Each refusal runs through every command taking that option (``run``, ``train``, ``export``, ``evaluate``,
``embed``), on real inputs: the tiny preset, a checkpoint ``edge-encoder train`` wrote, a real deploy bundle.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from edge_encoder import cli

from tests.commands.conftest import call

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = PROJECT_ROOT / "tests" / "pipeline" / "tiny.toml"
ALL = ("run", "train", "export", "evaluate", "embed")

# name: (extra arguments, the message every command prints, the commands that take the option)
REFUSALS: dict[str, tuple[list[str], str, tuple[str, ...]]] = {
    "override without '='": (["--set", "data.max_test"], "must look like SECTION.KEY=VALUE", ALL),
    "override of no section": (["--set", "model.width=4"], "must look like SECTION.KEY=VALUE", ALL),
    "unknown data key": (["--set", "data.max_tset=8"], "config key 'data.max_tset': unknown key; did you mean 'max_test'",
                         ALL),
    "bad data value": (["--set", "data.seed=-1"], "config key 'data.seed': must be >= 0", ALL),
    "unknown dataset": (["--dataset", "imagenet-99"], "unknown dataset 'imagenet-99'", ALL),
    "missing preset": (["--config", "/nonexistent/preset.toml"], "config file /nonexistent/preset.toml does not exist",
                       ("run", "train", "evaluate", "embed")),
    "bad run name": (["--name", "../escape"], "run name '../escape' must use letters", ("run", "train", "evaluate")),
    "batch larger than the data": (["--set", "data.max_train=32"], "train.batch_size", ("run", "train")),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of one tiny ``edge-encoder train`` (digits, 2 epochs, 16 px)."""
    runs = tmp_path_factory.mktemp("runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", "--config", str(TINY), "--runs-dir", str(runs), "--name", "t", "--device", "cpu",
                         "--no-progress"])
    assert code == 0
    return Path(out.getvalue().strip().splitlines()[-1])


def command_line(command: str, work: Path, checkpoint: Path, bundle: Path) -> list[str]:
    """A valid command line of ``command`` writing only under ``work`` (the refusal's arguments come after it and
    win: argparse keeps an option's last value)."""
    return {
        "run": ["run", "--config", TINY, "--runs-dir", work, "--device", "cpu", "--no-progress"],
        "train": ["train", "--config", TINY, "--runs-dir", work, "--device", "cpu", "--no-progress"],
        "export": ["export", checkpoint, "--out", work / "bundle", "--dataset", "digits", "--no-progress"],
        "evaluate": ["evaluate", bundle, "--dataset", "digits", "--runs-dir", work, "--no-progress"],
        "embed": ["embed", bundle, "--dataset", "digits", "--out", work / "e.npz", "--no-progress"],
    }[command]


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_each_refusal_is_the_same_in_every_command(capsys, tmp_path: Path, checkpoint: Path, tiny_bundle: Path,
                                                   refusal: str) -> None:
    extra, message, commands = REFUSALS[refusal]
    seen = {}
    for command in commands:
        work = tmp_path / command
        work.mkdir()
        code, _, err = call(capsys, *command_line(command, work, checkpoint, tiny_bundle), *extra)
        lines = err.strip().splitlines()
        assert code == 2 and lines and message in lines[-1], (command, err[-1500:])
        assert lines[-1].startswith("error: ") and "Traceback" not in err, (command, err[-1500:])
        assert list(work.iterdir()) == [], (command, sorted(work.rglob("*")))  # refused before anything was written
        seen[command] = lines[-1]
    assert len(seen) == len(commands)
