"""``edge-encoder``: one console script, one subcommand per way the project is used.

    edge-encoder run [...]        train -> export -> evaluate -> report (what ``python pipeline.py`` does)
    edge-encoder train [...]      train only (run's options); prints the checkpoint
    edge-encoder export CKPT      export a checkpoint again into a deploy bundle
    edge-encoder evaluate ENGINE --dataset SPEC   a bundle or any ONNX encoder file -> report.json / report.md
    edge-encoder embed ENGINE (--images DIR | --dataset SPEC) --out FILE.npz   embeddings with their image paths
    edge-encoder verify BUNDLE    on the device: check every bundle file and gate each engine on the reference set
    edge-encoder build BUNDLE     on the device: build the TensorRT plans (and their Triton models)
    edge-encoder key PLAN --onnx F  the engine key of a plan trtexec built
    edge-encoder compare A B      two runs' reports side by side

Without a subcommand, the arguments are those of ``run`` (``edge-encoder --config X`` keeps working).
Exit codes: 0 ok, 2 usage or input error (one line), 3 a gate failed, 130 interrupted.

Each subcommand's module is imported only when that subcommand runs, so the device commands (``verify``, ``build``,
``key``, ``embed --images``) work with the base install, which has no torch; a command that needs the training stack
says so in one line (exit 2) when it is missing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

# name -> (module under edge_encoder, parent-parser factory, handler, needs the training stack, summary); run is the
# composition root's (pipeline.py), which takes its options from commands/run.py.
COMMANDS: dict[str, tuple[str, str, str, bool, str]] = {
    "run": ("pipeline", "get_args_parser", "command", True, "train, export and evaluate in one go; write the report"),
    "train": ("commands.train", "get_args_parser", "train_command", True, "train only (run's options); print the checkpoint path"),
    "export": ("commands.export", "get_args_parser", "export_command", True,
               "export a checkpoint again into a deploy bundle (exit 3 when a parity gate fails)"),
    "evaluate": ("commands.evaluate", "get_args_parser", "evaluate_command", True,
                 "evaluate a bundle or any ONNX encoder file on a dataset; write the report"),
    "embed": ("commands.embed", "get_args_parser", "embed_command", False,
              "embed a folder of images or a dataset through an engine into an .npz"),
    "verify": ("commands.verify", "get_args_parser", "verify_command", False,
               "check a deploy bundle on this device; write device_report"),
    "build": ("commands.build", "get_args_parser", "build_command", False,
              "build the TensorRT plans of a bundle on this device"),
    "key": ("commands.build", "get_key_args_parser", "key_command", False,
            "write this device's engine key for a plan trtexec built"),
    "compare": ("commands.compare", "get_args_parser", "compare_command", False, "two runs' reports side by side"),
}


def _module(name: str) -> Any:
    return importlib.import_module(f"edge_encoder.{name}")


def _plain(doc: str | None) -> str:
    """A module docstring as help text: without the reST double backticks."""
    return (doc or "").replace("``", "")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (none when None: ``edge-encoder --help`` lists the
    commands' summaries, ``edge-encoder COMMAND --help`` their options)."""
    parser = argparse.ArgumentParser(prog="edge-encoder", description=__doc__.split("\n\n")[0],
                                     epilog="Without a COMMAND, the arguments are run's. `edge-encoder COMMAND --help` "
                                            "lists a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, factory, _, _, summary) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        module = _module(module_name)
        description = _plain(module.__doc__).split("\n\n")[0] if name == "run" else _plain(module.__doc__)
        sub.add_parser(name, help=summary, description=description, epilog=getattr(module, "EPILOG", None),
                       parents=[getattr(module, factory)()], formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """What runs ``command``: a function of the parsed arguments returning the exit code."""
    module_name, _, function, _, _ = COMMANDS[command]
    run = getattr(_module(module_name), function)
    if command in ("verify", "build", "key"):
        return run  # these print their own one-line errors (one per bundle file or plan)
    from edge_encoder.commands.errors import run_command

    return lambda args: run_command(run, args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the pre-subcommand console script took run's arguments directly
    command = argv[0] if argv[0] in COMMANDS else None
    if command is not None and COMMANDS[command][3]:  # --help too: the command's options need its modules
        from edge_encoder.commands.errors import UsageError, require_training_stack

        try:
            require_training_stack(f"edge-encoder {command}")
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    args = build_parser(command).parse_args(argv)
    return handler(args.command)(args)


if __name__ == "__main__":
    sys.exit(main())
