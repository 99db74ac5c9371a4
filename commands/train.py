"""``edge-encoder train``: MoCo training only, with ``run``'s options (preset, ``--set``, ``--dataset``, ``--name``).

Writes ``RUNS_DIR/NAME/config.json`` and ``RUNS_DIR/NAME/train/`` (checkpoints, log) and prints the final
checkpoint's path, which ``edge-encoder export`` takes. Rerunning the same command resumes from the last checkpoint
(a finished training is reused as it is), and a later ``run`` with the same name reuses it too. The run folder is
opened exactly as ``run`` opens it (``commands.run_folder``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_encoder import stages
from edge_encoder.commands.options import output_options, run_options, run_settings, show_progress
from edge_encoder.commands.run_folder import open_run_folder
from edge_encoder.train.distributed import leave_process_group

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    """``run``'s options without the export's ``--allow-failed-parity`` (a parent parser)."""
    return argparse.ArgumentParser(add_help=False, parents=[run_options(export_gate=False), output_options()])


def train_command(args: argparse.Namespace) -> int:
    """Train (or resume) and print the checkpoint path; returns the exit code."""
    settings = run_settings(args)
    device = stages.pick_device(args.device)
    progress = show_progress(args)
    data = stages.load_run_data(settings.data)  # before anything is written: a bad dataset leaves no run folder
    folder = open_run_folder(settings, data, Path(args.runs_dir))
    log.info("train %s on %s -> %s; data: %s", settings.name, device, folder.path, data.describe())
    result = stages.run_train(settings, data, folder.path, device, progress)
    log.info("trained %d steps (%d epochs) in %.1f s, final loss %.4f", result.steps, result.epochs, result.seconds,
             result.final_loss)
    leave_process_group()
    if folder.rank == 0:
        folder.training_accepted()  # what `export` reads (dataset, [export])
        print(result.checkpoint_path)
    return 0
