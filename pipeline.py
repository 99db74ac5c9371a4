"""One command from images to a deployed, evaluated encoder: train (MoCo) -> export (ONNX variants) -> evaluate.

    python pipeline.py                                   # digits, CPU quick preset
    python pipeline.py --config configs/cifar10_cpu.toml --dataset npz:../shared/data/cifar10_dev.npz
    python pipeline.py --set train.epochs=5 --set evaluate.knn_k=200 --name my_run

This module is the composition root: :func:`run` calls the stages (``stages.py``) in order on validated settings
(``settings.py``) and writes the report; :func:`command` is ``edge-encoder run`` (= ``python pipeline.py``), whose
command line (options, presets, the run folder and its lock) is ``commands/run.py``'s. Every run writes ``runs/<name>/``:
``config.json`` (resolved), ``train/`` (checkpoints, log), ``deploy/`` (ONNX variants, manifest), ``report.json``,
``report.md`` and a printed summary. Exit codes (``core.errors``, one line on stderr): 0 ok, 2 usage, input or I/O
error, 3 a gate failed (a precision variant's parity gate, see ``--allow-failed-parity``; a non-finite training
state), 130 interrupted.
"""

from __future__ import annotations

import importlib.util
import sys

if __name__ == "__main__" and importlib.util.find_spec("edge_encoder") is None:
    # `python pipeline.py` from a checkout that was never installed: the package's modules cannot be imported.
    print(f"error: the edge_encoder package is not installed for {sys.executable}: run `make run` (it creates .venv "
          "and installs the project), or `pip install -e '.[train,cpu]'` in this folder first", file=sys.stderr)
    sys.exit(2)

import argparse  # noqa: E402 - after the check above, which must run before any project import
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from edge_encoder import stages  # noqa: E402
from edge_encoder.commands.errors import run_command  # noqa: E402
from edge_encoder.commands.run import EPILOG, build_parser, get_args_parser, prepare_run  # noqa: E402
from edge_encoder.commands.run_folder import RunFolder  # noqa: E402
from edge_encoder.core.errors import EXIT_GATE, EXIT_OK  # noqa: E402
from edge_encoder.evaluate.report import assemble_report, render_summary_table, write_report  # noqa: E402
from edge_encoder.export.bundle import BundleResult  # noqa: E402
from edge_encoder.imagedata import RunData  # noqa: E402
from edge_encoder.settings import Settings  # noqa: E402
from edge_encoder.train.distributed import leave_process_group  # noqa: E402
from edge_encoder.train.loop import TrainResult  # noqa: E402

log = logging.getLogger(__name__)
__all__ = ["EPILOG", "command", "get_args_parser", "main", "report", "run"]


def main(argv: list[str] | None = None) -> int:
    """``python pipeline.py ARGS``: parse ``argv`` (default ``sys.argv[1:]``) and run; returns the exit code."""
    return run_command(command, build_parser().parse_args(argv))


def command(args: argparse.Namespace) -> int:
    """``edge-encoder run`` with parsed options: prepare (``commands.run.prepare_run``), then :func:`run`."""
    prepared = prepare_run(args)
    return run(prepared.settings, prepared.data, prepared.folder, device=prepared.device, progress=prepared.progress,
               timings=prepared.timings, started=prepared.started)


def run(settings: Settings, data: RunData, folder: RunFolder, *, device: str, progress: bool,
        timings: dict[str, float] | None = None, started: float | None = None) -> int:
    """Train, export, evaluate and report one run; returns the exit code (3 when a variant failed its gate).

    Args:
        settings: the validated run settings.
        data: the loaded run data (``stages.load_run_data``).
        folder: the open run folder (``commands.run_folder.open_run_folder``) and this process's ``torchrun`` rank:
            every rank trains; export and evaluation run on rank 0 only.
        device: ``"cpu"`` or ``"cuda"`` (``stages.pick_device``).
        timings, started: times already spent (``{"data": s}``) and the ``time.perf_counter()`` of the start,
            for the report's ``timings``.
    """
    timings, run_dir = dict(timings or {}), folder.path
    started = time.perf_counter() if started is None else started
    log.info("run %s on %s -> %s", settings.name, device, run_dir)
    log.info("data: %s", data.describe())
    with timed(timings, "train"):
        train_result = stages.run_train(settings, data, run_dir, device, progress)
    log.info("trained %d steps (%d epochs) in %.1f s, %.0f images/s, final loss %.4f -> %s", train_result.steps,
             train_result.epochs, train_result.seconds, train_result.images_per_s, train_result.final_loss,
             train_result.checkpoint_path)
    leave_process_group()  # export and evaluation run single-process on rank 0 (the others are done)
    if folder.rank != 0:
        return EXIT_OK
    folder.training_accepted()  # a folder training refused (another config's checkpoints) keeps its config.json
    checkpoint = train_result.checkpoint_path
    with timed(timings, "export"):
        bundle = stages.run_export(settings, data, checkpoint, run_dir / "deploy", progress)
    sections: dict[str, Any] = {"metrics": {}}
    indexed = None
    if data.evaluation is not None:
        with timed(timings, "evaluate"):
            sections["metrics"], indexed = stages.run_evaluate(settings, data.evaluation, checkpoint, bundle, run_dir,
                                                               progress)
    with timed(timings, "label_free"):
        sections["label_free"] = stages.run_label_free(settings, data, checkpoint, bundle, run_dir, progress)
    if settings.evaluate.index_benchmark and indexed is not None:
        with timed(timings, "index_benchmark"):
            sections["index_benchmark"] = stages.run_index_benchmark(settings, indexed)
        log.info("index benchmark on %s: %s", indexed.name, sections["index_benchmark"]["recommendation"])
    timings["total"] = time.perf_counter() - started
    return report(settings, data, device, timings, train_result, bundle, sections, run_dir)


def report(settings: Settings, data: RunData, device: str, timings: dict[str, float], train_result: TrainResult,
           bundle: BundleResult, sections: dict[str, Any], run_dir: Path) -> int:
    """Write ``report.json``/``report.md`` and print the summary (``sections``: ``metrics``, then optional ones,
    None = left out); returns the gate's exit code."""
    report = assemble_report(name=settings.name, device=device, dataset=data.summary(), config=settings.to_dict(),
                             timings=timings, train=train_result.summary(), export=bundle.summary(),
                             metrics=sections.pop("metrics"))
    report.update(train_data=data.train_summary(), accuracy_measured=data.evaluation is not None,
                  accuracy_note=data.accuracy_note)
    report.update({key: value for key, value in sections.items() if value is not None})
    json_path, md_path = write_report(run_dir, report)
    print(render_summary_table(report))
    print(f"\nreport: {json_path}\n        {md_path}")
    print(bundle.pin_line())
    message = stages.gate_failure(bundle)
    if message and not settings.export.allow_failed:
        print(message, file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """``with timed(timings, "train"):`` records the block's wall time in seconds under ``key``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
