"""``edge-encoder compare RUN_A RUN_B``: two runs' reports side by side (``evaluate.compare``).

RUN_A / RUN_B are run folders holding ``report.json`` (from ``run`` or ``evaluate``) or report files. A report
that is not readable JSON or not of the report schema is one line naming the file, exit 2.
"""

from __future__ import annotations

import argparse

from edge_encoder.commands.errors import usage_errors
from edge_encoder.commands.options import output_options


def get_args_parser() -> argparse.ArgumentParser:
    """compare's options (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False, parents=[output_options()])
    parser.add_argument("run_a", metavar="RUN_A", help="run folder or report.json of run A")
    parser.add_argument("run_b", metavar="RUN_B", help="run folder or report.json of run B")
    return parser


def compare_command(args: argparse.Namespace) -> int:
    """Print the comparison table; returns the exit code."""
    from edge_encoder.evaluate.compare import render_comparison
    from edge_encoder.evaluate.report import load_report

    with usage_errors():
        a, b = load_report(args.run_a), load_report(args.run_b)
    print(render_comparison(a, b))
    return 0
