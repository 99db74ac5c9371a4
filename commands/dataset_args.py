"""A labelled dataset for an engine this run did not train (``evaluate``, ``embed --dataset``): the options of
``commands.options.dataset_options`` resolved into validated ``Settings``, with the image size fixed by the engine."""

from __future__ import annotations

import argparse
from typing import Any

from edge_encoder.settings import STAGE_SECTIONS, Settings, apply_overrides, load_config_file, preset_path, validate_config


def resolve_settings(args: argparse.Namespace, dataset: str, image_size: int, name: str,
                     sections: tuple[str, ...] = ("data", "evaluate")) -> Settings:
    """The validated ``Settings`` for ``dataset`` fitted to ``image_size`` (the engine's input side): the preset's
    ``sections`` (if ``--config``), then the flags, then ``--set`` overrides of those sections only."""
    config: dict[str, Any] = {section: {} for section in STAGE_SECTIONS}
    if args.config:
        preset = load_config_file(preset_path(args.config))
        for section in sections:
            config[section] = dict(preset[section])
    data = config["data"]
    data.update(dataset=dataset, image_size=image_size)
    if args.data_root:
        data["data_root"] = args.data_root
    if args.skip_corrupt:
        data["skip_corrupt"] = True
    apply_overrides(config, args.set, sections=sections, fixed={
        ("data", "image_size"): (image_size, f"the engine takes {image_size}x{image_size} images, so images are "
                                             f"fitted to {image_size} (data.image_size is the engine's)"),
        ("data", "dataset"): (None, "give the dataset with --dataset")})
    return validate_config(config, name)


def run_name(label: str, prefix: str) -> str:
    """``prefix-label`` with the characters a run name may not hold replaced by ``_``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip(".") or "engine"
    return f"{prefix}-{safe}"
