"""``edge-encoder export CHECKPOINT``: export a checkpoint again into a deploy bundle.

CHECKPOINT is a checkpoint file (``runs/<name>/train/checkpoints/step_*.pt``) or a run folder (its latest
checkpoint). Calibration images come from the dataset's train split and parity images from its test split, fitted
to the checkpoint's input size: the dataset recorded in the run's ``config.json`` (with its ``[data]`` and
``[export]`` settings), or ``--dataset`` / ``--calibration-data SPEC``. The bundle goes to ``--out`` (default:
the run's ``deploy/``, replaced only when the new bundle is complete; an existing ``--out`` that is neither empty
nor a deploy bundle is refused, exit 2, and left as it was). Exit 3 when a variant fails its parity gate
(the files are kept, marked failed in the manifest) unless ``--allow-failed-parity``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge_encoder import stages
from edge_encoder.commands.errors import EXIT_GATE, UsageError, usage_errors
from edge_encoder.commands.options import DATASET_HELP, output_options, set_option, show_progress
from edge_encoder.core.files import hold_lock
from edge_encoder.settings import STAGE_SECTIONS, Settings, apply_overrides, validate_config
from edge_encoder.train.checkpoint import checkpoint_preprocess, latest_checkpoint, load_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    """export's options (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False, parents=[output_options()])
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint file (runs/NAME/train/checkpoints/step_*.pt) or a run folder (its latest)")
    parser.add_argument("--out", metavar="DIR", help="the bundle folder (default: the checkpoint's run's deploy/)")
    parser.add_argument("--dataset", "--calibration-data", dest="dataset", metavar="SPEC",
                        help="calibration (train split) and parity (test split) images: " + DATASET_HELP +
                             " (default: the dataset in the run's config.json)")
    parser.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are read (or downloaded) from")
    set_option(parser, "override an export (or data) config value, e.g. export.variants=['fp32','int8_cpu']")
    parser.add_argument("--allow-failed-parity", action="store_true",
                        help="exit 0 even if a variant fails its parity gate")
    return parser


def resolve_checkpoint(text: str) -> tuple[Path, Path | None]:
    """``(checkpoint file, its run folder or None)``: the run folder is ``<run>`` of
    ``<run>/train/checkpoints/step_*.pt``; a folder argument stands for its latest checkpoint."""
    path = Path(text).expanduser()
    if path.is_dir():
        train_dir = path / "train" if (path / "train" / "checkpoints").is_dir() else path
        found = latest_checkpoint(train_dir)
        if found is None:
            raise UsageError(f"{path}: no checkpoint in {train_dir / 'checkpoints'} (give a step_*.pt file or a run folder)")
        path = found
    elif not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    parents = path.resolve().parents
    in_run = len(parents) >= 3 and parents[0].name == "checkpoints" and parents[1].name == "train"
    return path, (parents[2] if in_run else None)


def _recorded_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.json`` (``{}`` when the checkpoint is not inside a run folder that has one)."""
    if run_dir is None or not (run_dir / "config.json").is_file():
        return {}
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def resolve_settings(args: argparse.Namespace, recorded: dict[str, Any], image_size: int) -> Settings:
    """The run's ``Settings`` for the export: recorded ``[data]``/``[export]``, then the flags and ``--set``."""
    config: dict[str, Any] = {section: {} for section in STAGE_SECTIONS}
    config["export"] = dict(recorded.get("export") or {})
    config["data"] = {"dataset": args.dataset} if args.dataset else dict(recorded.get("data") or {})
    if "dataset" not in config["data"]:
        raise UsageError(f"no dataset recorded for {args.checkpoint} (its run folder has no config.json): give "
                         "--dataset SPEC for the calibration and parity images")
    config["data"]["image_size"] = image_size
    if args.data_root:
        config["data"]["data_root"] = args.data_root
    if args.allow_failed_parity:
        config["export"]["allow_failed"] = True
    apply_overrides(config, args.set, sections=("export", "data"), fixed={
        ("data", "image_size"): (image_size, f"the checkpoint fixes the image size ({image_size})")})
    return validate_config(config, recorded.get("name") or "export")


def export_command(args: argparse.Namespace) -> int:
    """Export the checkpoint, print the bundle and each variant's gate; returns the exit code."""
    checkpoint, run_dir = resolve_checkpoint(args.checkpoint)
    with usage_errors():
        image_size = checkpoint_preprocess(load_checkpoint(checkpoint), checkpoint).image_size
    out = Path(args.out).expanduser() if args.out else (run_dir / "deploy" if run_dir is not None else None)
    if out is None:
        raise UsageError(f"{checkpoint} is not inside a run folder (RUN/train/checkpoints/): give --out DIR")
    stages.check_bundle_dir(out)  # a folder that is not a bundle (a user's files) is refused before any work
    settings = resolve_settings(args, _recorded_config(run_dir), image_size)
    data = stages.load_run_data(settings.data)  # calibration: training images; parity: held-out images
    if run_dir is not None:  # as run: no export into a run folder another process is training or exporting in
        hold_lock(run_dir)
    progress = show_progress(args)
    with usage_errors():
        bundle = stages.run_export(settings, data, checkpoint, out, progress)
    for name, variant in bundle.variants.items():
        cosine = variant.parity.get("cosine_min")
        print(f"{name:10s} {'passed' if variant.passed else 'FAILED'}"
              + (f"  cosine min {cosine:.6f}" if isinstance(cosine, float) else "")
              + ("" if variant.passed else f"  ({', '.join(variant.parity.get('failures', []))})"))
    print(f"bundle: {bundle.manifest_path.parent}")
    print(bundle.pin_line())
    message = stages.gate_failure(bundle)
    if message and not settings.export.allow_failed:
        print(message, file=sys.stderr)
        return EXIT_GATE
    return 0
