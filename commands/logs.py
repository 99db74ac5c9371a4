"""Logging of the command line: the terminal (``-v`` for debug) and a run folder's ``pipeline.log``.

Standard library only (the device commands use it on the base install).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class QuietThirdParty(logging.Filter):
    """Drops the ONNX exporter's pass-by-pass INFO chatter and ONNX Runtime's quantizer advice (logged on root)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("onnxscript", "onnx_ir", "faiss")) and record.levelno < logging.WARNING:
            return False
        return "pre-processing before quantization" not in record.getMessage()


class RunLogHandler(logging.FileHandler):
    """``pipeline.log``. A failed write (a full disk) would print logging's "--- Logging error ---" traceback on
    every record; instead one warning line says the file is abandoned, and the run goes on logging to the terminal
    (the next file it must write fails in one line naming that file)."""

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name for it
        error = sys.exc_info()[1]
        logging.getLogger().removeHandler(self)
        with contextlib.suppress(Exception):
            self.close()
        print(f"WARNING {__name__}: stopped writing {self.baseFilename}: {error}", file=sys.stderr)


def setup_logging(verbose: bool) -> None:
    """Log to the terminal: INFO (DEBUG with ``verbose``), without third-party chatter unless ``verbose``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietThirdParty())


def log_to_file(path: Path) -> logging.Handler:
    """Also log every record (third-party chatter left out) to ``path``, appending; returns the handler."""
    handler = RunLogHandler(path)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.addFilter(QuietThirdParty())
    logging.getLogger().addHandler(handler)
    return handler
