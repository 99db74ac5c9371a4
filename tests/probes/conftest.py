"""The probe suite under pytest: one finished tiny run shared by the cases that need one, and the probe table
printed at the end of the session (``pytest tests/probes -q``; ``-m 'not slow'`` for the quick cases only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.probes.harness import Table, build_finished_run

_TABLE = Table()


@pytest.fixture(scope="session")
def probe_table() -> Table:
    return _TABLE


@pytest.fixture(scope="session")
def finished_run_factory(tmp_path_factory: pytest.TempPathFactory):
    """Builds the shared finished run on first use only (cases without it never pay for it)."""
    built: dict[str, Path] = {}

    def finished() -> Path:
        if "run" not in built:
            built["run"] = build_finished_run(tmp_path_factory.mktemp("finished"))
        return built["run"]

    return finished


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _TABLE.rows:
        terminalreporter.write_sep("=", "probe table (issue 12)")
        terminalreporter.write_line(_TABLE.render())
