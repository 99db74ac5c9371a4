"""``edge-encoder``: one console script, one subcommand per way people use the project.

    edge-encoder run [...]        train -> export -> evaluate -> report (what ``python pipeline.py`` does)
    edge-encoder train [...]      train only (run's options); prints the checkpoint
    edge-encoder export CKPT      export a checkpoint again into a deploy bundle
    edge-encoder evaluate ENGINE --dataset SPEC   a bundle or any ONNX encoder file -> report.json / report.md
    edge-encoder embed ENGINE (--images DIR | --dataset SPEC) --out FILE.npz   embeddings with their image paths
    edge-encoder verify BUNDLE    on the device: check every bundle file and gate each engine on the reference set
    edge-encoder compare A B      two runs' reports side by side

Without a subcommand, the arguments are those of ``run`` (``edge-encoder --config X`` keeps working).
Exit codes: 0 ok, 2 usage or input error (one line), 3 a gate failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from edge_encoder import pipeline
from edge_encoder.commands import compare, embed, evaluate, export, train
from edge_encoder.commands.errors import run_command
from edge_encoder.export import verify

COMMANDS = ("run", "train", "export", "evaluate", "embed", "verify", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-encoder", description=__doc__.split("\n\n")[0],
                                     epilog="Without a COMMAND, the arguments are run's. `edge-encoder COMMAND --help` "
                                            "lists a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pipeline.add_run_arguments(sub.add_parser("run", help="train, export and evaluate in one go; write the report",
                                              description=pipeline.__doc__.split("\n\n")[0]))
    for name, module, summary in (
        ("train", train, "train only (run's options); print the checkpoint path"),
        ("export", export, "export a checkpoint again into a deploy bundle (exit 3 when a parity gate fails)"),
        ("evaluate", evaluate, "evaluate a bundle or any ONNX encoder file on a dataset; write the report"),
        ("embed", embed, "embed a folder of images or a dataset through an engine into an .npz"),
    ):
        module.add_arguments(sub.add_parser(name, help=summary, description=_plain(module.__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    verify.add_verify_arguments(sub.add_parser("verify", help="check a deploy bundle on this device; write device_report",
                                               description=verify.__doc__.split("\n\n")[0]))
    compare.add_arguments(sub.add_parser("compare", help="two runs' reports side by side",
                                         description=_plain(compare.__doc__)))
    return parser


def _plain(doc: str | None) -> str:
    """A module docstring as help text: without the reST double backticks."""
    return (doc or "").replace("``", "")


# What runs each subcommand: a function of the parsed arguments returning the exit code.
HANDLERS = {
    "run": pipeline.main_args,
    "train": partial(run_command, train.train_command),
    "export": partial(run_command, export.export_command),
    "evaluate": partial(run_command, evaluate.evaluate_command),
    "embed": partial(run_command, embed.embed_command),
    "verify": verify.main_args,
    "compare": partial(run_command, compare.compare_command),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the pre-subcommand console script took run's arguments directly
    args = build_parser().parse_args(argv)
    return HANDLERS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
