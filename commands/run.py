"""``edge-encoder run`` (= ``python pipeline.py``): train (MoCo) -> export (ONNX variants) -> evaluate -> report.

    edge-encoder run                                     # digits, CPU quick preset
    edge-encoder run --config cifar10_cpu --dataset npz:../shared/data/cifar10_dev.npz
    edge-encoder run --set train.epochs=5 --set evaluate.knn_k=200 --name my_run

Writes ``RUNS_DIR/NAME/``: ``config.json`` (resolved), ``train/`` (checkpoints, log), ``deploy/`` (ONNX variants,
manifest), ``report.json``, ``report.md``, ``pipeline.log``, and prints a summary. Rerunning the same command
resumes training from the last checkpoint. One process at a time holds a run folder. Exit codes: 0 ok, 2 usage,
input or I/O error, 3 a gate failed (see ``--allow-failed-parity``) or a non-finite training state, 130
interrupted.

This module is run's command line: its options and everything before the stages (settings, device, data, the run
folder). ``pipeline.py``, the composition root, takes it from there (``pipeline.command``); commands never import
the pipeline.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_encoder import stages
from edge_encoder.commands.options import output_options, run_options, run_settings, show_progress
from edge_encoder.commands.run_folder import RunFolder, open_run_folder
from edge_encoder.imagedata import RunData
from edge_encoder.settings import Settings

EPILOG = "Config keys: see configs/*.toml and README.md. Any key can be overridden with --set SECTION.KEY=VALUE."


def get_args_parser() -> argparse.ArgumentParser:
    """run's options (a parent parser)."""
    return argparse.ArgumentParser(add_help=False, parents=[run_options(export_gate=True), output_options()])


def build_parser(prog: str = "pipeline.py") -> argparse.ArgumentParser:
    """The parser of ``python pipeline.py`` (= ``edge-encoder run``)."""
    return argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("``", ""),
                                   epilog=EPILOG,
                                   parents=[get_args_parser()], formatter_class=argparse.RawDescriptionHelpFormatter)


@dataclass(frozen=True)
class PreparedRun:
    """A run ready for its stages: validated settings, the loaded data, the open run folder."""

    settings: Settings
    data: RunData
    folder: RunFolder
    device: str
    progress: bool
    started: float  # time.perf_counter() at the start, for the report's timings
    timings: dict[str, float] = field(default_factory=dict)


def prepare_run(args: argparse.Namespace) -> PreparedRun:
    """Validate the options, pick the device, load the data, then open the run folder (``commands.run_folder``:
    a bad dataset or a config the data cannot serve is refused before anything is written)."""
    started = time.perf_counter()
    settings = run_settings(args)
    device = stages.pick_device(args.device)
    progress = show_progress(args)
    data = stages.load_run_data(settings.data)
    timings = {"data": time.perf_counter() - started}
    folder = open_run_folder(settings, data, Path(args.runs_dir))
    return PreparedRun(settings, data, folder, device, progress, started, timings)
