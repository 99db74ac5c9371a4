"""``edge-encoder``: one console script, one subcommand per way people use the project.

    edge-encoder run [...]        train -> export -> evaluate -> report (what ``python pipeline.py`` does)

Without a subcommand, the arguments are those of ``run`` (``edge-encoder --config X`` keeps working).
Exit codes: 0 ok, 2 usage or input error (one line), 3 a gate failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from edge_encoder import pipeline

COMMANDS = ("run",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-encoder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pipeline.add_run_arguments(sub.add_parser("run", help="train, export and evaluate in one go; write the report",
                                              description=pipeline.__doc__.split("\n\n")[0]))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the pre-subcommand console script took run's arguments directly
    args = build_parser().parse_args(argv)
    return pipeline.main_args(args)


if __name__ == "__main__":
    sys.exit(main())
