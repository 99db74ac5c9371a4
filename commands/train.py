"""``edge-encoder train``: MoCo training only, with ``run``'s options (preset, ``--set``, ``--dataset``, ``--name``).

Writes ``RUNS_DIR/NAME/config.json`` and ``RUNS_DIR/NAME/train/`` (checkpoints, log) and prints the final
checkpoint's path, which ``edge-encoder export`` takes. Rerunning the same command resumes from the last checkpoint
(a finished training is reused as it is), and a later ``run`` with the same name reuses it too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge_encoder import pipeline

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``run``'s options, without the one about export (``--allow-failed-parity``)."""
    pipeline.add_run_arguments(parser)
    for action in parser._actions:  # argparse has no public way to drop an option another function added
        if "--allow-failed-parity" in action.option_strings:
            action.help = argparse.SUPPRESS


def train_command(args: argparse.Namespace) -> int:
    """Train (or resume) and print the checkpoint path; returns the exit code."""
    from edge_encoder.core.files import atomic_write_json, hold_lock

    settings = pipeline.validate_config(pipeline.resolve_config(args), args.name)
    device = pipeline.pick_device(args.device)
    progress = not args.no_progress and sys.stderr.isatty()
    run_dir = Path(args.runs_dir) / settings.name
    data = pipeline.load_run_data(settings.data)  # before anything is written: a bad dataset leaves no run folder
    pipeline.check_fit(settings, data)  # as run: a batch larger than the data is refused before the folder exists
    rank = int(os.environ.get("RANK", "0"))  # under torchrun every rank trains; rank 0 writes
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        hold_lock(run_dir)  # as run: one process per run folder (exit 2 naming the holder's pid)
        if not (run_dir / "config.json").exists():  # as run: rewritten once training accepted the run (below)
            atomic_write_json(run_dir / "config.json", settings.to_dict())
    log.info("train %s on %s -> %s; data: %s", settings.name, device, run_dir, data.describe())
    result = pipeline.run_train(settings, data, run_dir, device, progress)
    log.info("trained %d steps (%d epochs) in %.1f s, final loss %.4f", result.steps, result.epochs, result.seconds,
             result.final_loss)
    if rank == 0:
        atomic_write_json(run_dir / "config.json", settings.to_dict())  # what `export` reads (dataset, [export])
        print(result.checkpoint_path)
    return 0
