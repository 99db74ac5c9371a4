"""How every subcommand ends: its exit code, and one line on stderr for an expected failure (never a traceback).

Exit codes (as ``python pipeline.py``): 0 ok, 2 usage or input error, 3 a gate failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edge_encoder import pipeline
from edge_encoder.pipeline import EXIT_INTERRUPTED, EXIT_PARITY, EXIT_USAGE, UsageError

__all__ = ["EXIT_INTERRUPTED", "EXIT_PARITY", "EXIT_USAGE", "UsageError", "add_output_arguments", "run_command",
           "usage_errors", "require_training_stack", "missing_training_stack"]

# What the training stack is, and how to get it (pyproject.toml's extras): the base install (`pip install
# edge-encoder`) is the device runtime only.
TRAINING_MODULES = ("torch", "torchvision", "onnx", "sklearn")
TRAINING_EXTRA = "pip install 'edge-encoder[train,cpu]' (or [train,gpu] on an NVIDIA machine; make run does this)"


def missing_training_stack() -> list[str]:
    """The training-stack modules that are not installed here (empty on a full install)."""
    return [m for m in TRAINING_MODULES if importlib.util.find_spec(m) is None]


def require_training_stack(what: str) -> None:
    """A :class:`UsageError` (exit 2) naming the extra when ``what`` needs the training stack and it is missing."""
    missing = missing_training_stack()
    if missing:
        raise UsageError(f"{what} needs the training stack ({', '.join(missing)} not installed): {TRAINING_EXTRA}")


@contextmanager
def usage_errors(what: str = "") -> Iterator[None]:
    """Turn the ``ValueError``/``TypeError`` of library code inside the block (bad file, bad manifest, bad data:
    the user's input) into a :class:`UsageError` (exit 2, one line), prefixed with ``what`` when given."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{what}{exc}") from exc


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``-v``, which every subcommand has."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``command(args)`` with logging set up; expected failures become one line and an exit code."""
    pipeline.setup_logging(args.verbose)
    # The one error path of every command line (core.errors.expected_failure via pipeline.exit_code_of): a
    # UsageError, bad data (DatasetError, a checkpoint), a held run lock, an OSError of a full or read-only disk
    # or a missing path (named), a non-finite training state, an interrupt. Anything else keeps its traceback.
    return pipeline.exit_code_of(command, args)
