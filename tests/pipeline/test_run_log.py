"""pipeline.log on a full disk: logging's own "--- Logging error ---" traceback would repeat for every record;
the run's handler prints one warning line, leaves, and the run goes on logging to the terminal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from edge_encoder.commands.logs import log_to_file


def test_a_full_disk_stops_the_log_file_with_one_warning(small_tmpfs: Callable[..., Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    disk = small_tmpfs(size="16k")
    log_path = disk / "pipeline.log"
    log_to_file(log_path)
    handler = logging.getLogger().handlers[-1]
    try:
        (disk / "filler").write_bytes(b"\0" * (16 * 1024 - 4096))  # the log's first page is taken; none left
        logger = logging.getLogger("edge_encoder.test_run_log")
        logger.setLevel(logging.INFO)
        for i in range(400):  # ~40 KB of records: far more than the disk holds
            logger.warning("record %d %s", i, "x" * 80)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    warnings = [line for line in err.splitlines() if "stopped writing" in line]
    assert len(warnings) == 1 and str(log_path) in warnings[0] and "No space left on device" in warnings[0]
    assert handler not in logging.getLogger().handlers
