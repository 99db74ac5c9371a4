"""The options the commands share, as parent parsers (DINO's ``get_args_parser(add_help=False)`` pattern), and how a
run's options become its config.

    run_options()       --config --dataset --train-data --eval-data --name --runs-dir --device --data-root
                        --skip-corrupt --set  (run, train; run adds --allow-failed-parity)
    dataset_options()   --config --set --data-root --skip-corrupt  (evaluate, embed: --dataset is the command's)
    output_options()    --no-progress -v  (every command that trains, exports or evaluates)

Standard library and ``settings`` (whose presets and override syntax need no training stack), so building the
parsers works on the base install.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from edge_encoder.settings import (
    DEFAULT_CONFIG,
    PHOTO_CONFIG,
    Settings,
    apply_overrides,
    load_config_file,
    parse_override,
    preset_path,
    shipped_presets,
    validate_config,
)

log = logging.getLogger(__name__)
DATASET_HELP = "digits | cifar10 | cifar100 | stl10 | mnist | fashion-mnist | folder:PATH | npz:PATH"
DATA_FLAGS = ("dataset", "train_data", "eval_data")  # the options naming an image set, as data.* keys


def output_options() -> argparse.ArgumentParser:
    """``--no-progress`` and ``-v``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: unless ``--no-progress``, and only on a terminal (a log file gets no bar redraws)."""
    return not args.no_progress and sys.stderr.isatty()


def set_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable), parsed by ``settings.apply_overrides`` for every command."""
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help_text)


def run_options(*, export_gate: bool) -> argparse.ArgumentParser:
    """The options of a training run (``run`` and ``train``); ``export_gate`` adds ``--allow-failed-parity``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", metavar="PATH",
                        help=f"TOML preset, or a shipped preset's name ({', '.join(shipped_presets())}; default: "
                             f"{DEFAULT_CONFIG.stem}, or {PHOTO_CONFIG.stem} when the images are files: folder:, "
                             "images:, list:)")
    parser.add_argument("--dataset", metavar="SPEC", help=f"{DATASET_HELP} (overrides data.dataset)")
    parser.add_argument("--train-data", metavar="SPEC",
                        help="training images, labels never used: folder:PATH | images:PATH | list:FILE.txt | npz:PATH "
                             "(x_train) | any dataset (its train split) (overrides data.train_data)")
    parser.add_argument("--eval-data", metavar="SPEC",
                        help="labelled evaluation set (train split = kNN bank and probe training set, test split = "
                             "queries); without it, beside --train-data, accuracy is not measured and the report "
                             "carries label-free metrics (overrides data.eval_data)")
    parser.add_argument("--name", metavar="NAME", help="run directory name: runs/NAME/ (default: the preset's name)")
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where run directories go (default: runs)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training/reference device")
    parser.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are read (or downloaded) from")
    parser.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out (counted in the report)")
    if export_gate:
        parser.add_argument("--allow-failed-parity", action="store_true",
                            help="exit 0 even if a variant fails its parity gate")
    set_option(parser, "override a config value (repeatable)")
    return parser


def dataset_options(*, sections: tuple[str, ...]) -> argparse.ArgumentParser:
    """``--config``, ``--set``, ``--data-root`` and ``--skip-corrupt`` of a command that reads a labelled dataset
    for an engine it did not train (the command adds ``--dataset``); ``sections`` are the config sections used."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", metavar="PATH",
                        help=f"use the {' and '.join(f'[{s}]' for s in sections)} section(s) of this TOML preset "
                             "(a path, or a shipped preset's name)")
    set_option(parser, f"override a config value of {'/'.join(sections)} (repeatable), e.g. data.max_test=500")
    parser.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are read (or downloaded) from")
    parser.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out (counted in the report)")
    return parser


def default_preset(args: argparse.Namespace) -> Path:
    """The preset of a run without ``--config``: ``settings.PHOTO_CONFIG`` when any image set it names
    (``--dataset``, ``--train-data``, ``--eval-data`` or ``--set data.dataset=...``) is image files (``folder:``,
    ``images:``, ``list:``), else ``settings.DEFAULT_CONFIG`` (digits). The digits preset's 16 px and CIFAR stem
    suit 8x8 digits, not photos; the photo preset's 64 px and ImageNet-style stem do, and ``--set`` still
    overrides any of its values."""
    from edge_encoder.imagedata.unlabelled import is_file_spec  # imagedata needs the training stack

    specs = [getattr(args, flag, None) for flag in DATA_FLAGS]
    for text in args.set or []:
        (section, key), value = parse_override(text)
        if section == "data" and key in DATA_FLAGS:
            specs.append(value)
    return PHOTO_CONFIG if any(isinstance(s, str) and is_file_spec(s.strip()) for s in specs) else DEFAULT_CONFIG


def resolve_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """A run's config: the preset (``--config``, else :func:`default_preset`'s) <- the dedicated flags <- ``--set``
    overrides; validated by ``settings.validate_config``."""
    preset = preset_path(args.config) if args.config else default_preset(args)
    config = load_config_file(preset)
    data = config["data"]
    for flag in DATA_FLAGS:
        if getattr(args, flag, None):
            data[flag] = getattr(args, flag)
    if args.dataset and args.train_data and not args.eval_data:
        data["eval_data"] = args.dataset  # --dataset keeps its evaluation role beside --train-data
    if args.skip_corrupt:
        data["skip_corrupt"] = True
    if args.data_root:
        data["data_root"] = args.data_root
    if getattr(args, "allow_failed_parity", False):
        config["export"]["allow_failed"] = True
    apply_overrides(config, args.set)
    if not args.config and preset != DEFAULT_CONFIG:
        log.info(
            "no --config given and the images are files: preset %s (images fitted to %s px, %s stem) instead of the "
            "digits default (16 px); pass --config to choose another", preset.stem,
            config["data"].get("image_size", "their own"), config["train"].get("stem", "cifar"))
    return config


def run_settings(args: argparse.Namespace) -> Settings:
    """The validated settings of a run's options (``run``, ``train``)."""
    return validate_config(resolve_run_config(args), args.name)
