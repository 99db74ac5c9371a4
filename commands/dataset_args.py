"""The dataset options of ``evaluate`` and ``embed`` (``--dataset SPEC``, ``--config``, ``--set data.*/evaluate.*``)
resolved into the pipeline's validated settings, with the image size fixed by the engine."""

from __future__ import annotations

import argparse
from typing import Any

from edge_encoder import pipeline
from edge_encoder.commands.errors import UsageError

DATASET_HELP = "digits | cifar10 | cifar100 | stl10 | mnist | fashion-mnist | folder:PATH | npz:PATH"


def add_dataset_options(parser: argparse.ArgumentParser, *, sections: tuple[str, ...]) -> None:
    """``--config``, ``--set``, ``--data-root`` and ``--skip-corrupt`` (``--dataset`` is added by the command)."""
    parser.add_argument("--config", metavar="PATH",
                        help=f"use the {' and '.join(f'[{s}]' for s in sections)} section(s) of this TOML preset "
                             "(a path, or a shipped preset's name)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help=f"override a config value of {'/'.join(sections)} (repeatable), e.g. data.max_test=500")
    parser.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are read (or downloaded) from")
    parser.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out (counted in the report)")


def resolve_settings(args: argparse.Namespace, dataset: str, image_size: int, name: str,
                     sections: tuple[str, ...] = ("data", "evaluate")) -> Any:  # -> pipeline.Settings
    """The pipeline's validated ``Settings`` for ``dataset`` fitted to ``image_size`` (the engine's input side):
    the preset's ``sections`` (if ``--config``), then the flags, then ``--set`` overrides of those sections only."""
    config: dict[str, Any] = {section: {} for section in pipeline.SECTIONS[1:]}
    if args.config:
        preset = pipeline.load_config_file(pipeline.preset_path(args.config))
        for section in sections:
            config[section] = dict(preset.get(section) or {})
    data = config["data"]
    data.update(dataset=dataset, image_size=image_size)
    if args.data_root:
        data["data_root"] = args.data_root
    if args.skip_corrupt:
        data["skip_corrupt"] = True
    for text in args.set or []:
        (section, key), value = pipeline.parse_override(text)
        if section not in sections:
            raise UsageError(f"override {text!r}: this command takes {'/'.join(s + '.KEY' for s in sections)} only")
        if (section, key) == ("data", "image_size") and value != image_size:
            raise UsageError(f"override {text!r}: the engine takes {image_size}x{image_size} images, so images are "
                             f"fitted to {image_size} (data.image_size is the engine's)")
        if (section, key) == ("data", "dataset"):
            raise UsageError(f"override {text!r}: give the dataset with --dataset")
        config[section][key] = value
    return pipeline.validate_config(config, name)


def run_name(label: str, prefix: str) -> str:
    """``prefix-label`` with the characters a run name may not hold replaced by ``_``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip(".") or "engine"
    return f"{prefix}-{safe}"
