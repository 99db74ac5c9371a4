"""Issue 12's faults and bad inputs, one test id each: the fixed code must give each case its expected verdict
(``clear error``: one line, exit 2/3/130, no traceback; ``correct``: the behaviour the issue asks for), with
nothing lost and nothing touched outside the run directory or bundle. The table prints at the end of the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.probes.cases import CASES
from tests.probes.harness import Case, Table, run_case


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_probe(case: Case, tmp_path: Path, finished_run_factory: Callable[[], Path], probe_table: Table) -> None:
    outcome = run_case(case, tmp_path / "sandbox", finished_run_factory)
    probe_table.add(case, outcome)
    if outcome.verdict == "skipped":
        pytest.skip(outcome.detail)
    assert outcome.verdict in case.accepted, f"{case.what}: {outcome.verdict}: {outcome.detail}"
