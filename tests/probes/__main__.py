"""Run the probe suite of issue 12 (``tests/probes/cases.py``) and print its table; from the project root:

    python -m tests.probes                 # every case (~20 min on a 2-core CPU; the slow ones train)
    python -m tests.probes --quick         # the cases CI runs as normal tests (no SIGKILL/concurrency/training)
    python -m tests.probes --only nan_loss --only diverging_run
    python -m tests.probes --json benchmarks/results/probes.json

Each case runs in its own sandbox under a temporary folder (``--work DIR`` keeps them), one at a time: the faults
are timed against real processes, and two probes at once on 2 cores would measure each other. Exit 0 when every
case gave its expected verdict (skipped cases aside), else 1. The same cases run under pytest
(``pytest tests/probes``), which prints the same table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the probes live in tests/probes (importable as tests.probes)

from tests.probes.cases import CASES
from tests.probes.harness import Table, build_finished_run, run_case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the cases that are not marked slow")
    parser.add_argument("--only", action="append", metavar="CASE", help="run this case (repeatable)")
    parser.add_argument("--work", metavar="DIR", help="keep the sandboxes here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the outcomes as JSON")
    args = parser.parse_args()
    cases = [c for c in CASES if (not args.quick or not c.slow) and (not args.only or c.name in args.only)]
    unknown = set(args.only or ()) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(c.name for c in CASES)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edge-encoder-probes-"))
    work.mkdir(parents=True, exist_ok=True)
    finished: dict[str, Path] = {}

    def finished_run() -> Path:
        if "run" not in finished:
            finished["run"] = build_finished_run(work / "finished")
        return finished["run"]

    table = Table()
    started = time.perf_counter()
    for i, case in enumerate(cases, 1):
        sandbox = work / case.name
        if sandbox.exists():  # a kept sandbox of an earlier call: every case starts from nothing
            shutil.rmtree(sandbox)
        outcome = run_case(case, sandbox, finished_run)
        table.add(case, outcome)
        print(f"[{i}/{len(cases)}] {case.name}: {outcome.verdict} ({outcome.seconds:.0f} s) {outcome.detail[:150]}",
              flush=True)
    print(f"\n{len(cases)} cases in {time.perf_counter() - started:.0f} s; sandboxes in {work}\n")
    print(table.render())
    if args.json:
        rows = [{"case": c.name, "defect": c.defect, "what": c.what, "expected": list(c.accepted), "slow": c.slow,
                 "verdict": o.verdict, "detail": o.detail, "seconds": round(o.seconds, 1)} for c, o in table.rows]
        Path(args.json).write_text(json.dumps({"totals": table.totals(), "cases": rows}, indent=2) + "\n")
    failed = [c.name for c, o in table.rows if o.verdict not in (*c.accepted, "skipped")]
    if failed:
        print(f"\nnot as expected: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
