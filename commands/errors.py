"""How every subcommand ends: its exit code, and one line on stderr for an expected failure (never a traceback).

The error types and the exit-code table are ``core.errors``'s (0 ok, 2 usage or input error, 3 a gate failed,
130 interrupted); this module is where the command line applies them. It imports only the standard library and
``core``, so the device commands run it on the base install.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_encoder.commands.logs import setup_logging
from edge_encoder.core.errors import EXIT_GATE, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, expected_failure

__all__ = ["EXIT_GATE", "EXIT_INTERRUPTED", "EXIT_USAGE", "UsageError", "exit_code_of", "run_command",
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


def exit_code_of(command: Callable[..., int], *args: Any) -> int:
    """``command(*args)``'s exit code; the one error path of every command line (``edge-encoder``, ``pipeline.py``).

    An expected failure (``core.errors.expected_failure``: bad input, a held run lock, a full or read-only disk,
    a non-finite training state, an interrupt) prints one line on stderr and returns 2, 3 or 130; anything else
    is a bug and propagates with its traceback."""
    try:
        return command(*args)
    except BaseException as exc:
        failure = expected_failure(exc)
        if failure is None:
            raise
        code, message = failure
        # Read from sys.modules, not imported: this module runs on the base install, where imagedata may not be.
        splits = sys.modules.get("edge_encoder.imagedata.splits")
        if splits is not None and isinstance(exc, splits.DatasetError):
            # Streamed data (data.stream) is decoded only as stages reach it: an unreadable file can surface mid-run
            # (a DatasetError met while loading is re-raised as a UsageError by stages.load_*).
            message += ". Remove or replace the file and rerun: checkpoints and finished files are kept"
        print(message, file=sys.stderr)
        return code


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``command(args)`` with logging set up (``-v``); expected failures become one line and an exit code."""
    setup_logging(getattr(args, "verbose", False))
    return exit_code_of(command, args)
