"""Checkpoints: atomic writes, the last N kept, safe loading (``weights_only=True``), backbone extraction.

Format (docs/CONTRACTS.md): a ``torch.save`` dict with ``format``, ``backbone`` (plain ``ResNetBackbone`` keys),
``backbone_config``, ``preprocess``, ``config``, plus the full training state under ``state``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from edge_encoder.core.files import atomic_write
from edge_encoder.train.backbones import ResNetBackbone, build_backbone
from torch import nn

FORMAT = "edge-encoder/moco-checkpoint/1"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The step checkpoints of a run directory, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def plain_backbone_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with plain keys (no ``module.``/``_orig_mod.`` wrapper prefixes), detached copies."""
    state = backbone.state_dict()
    clean = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        clean[key] = value.detach().clone().cpu()
    return clean


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (must carry ``format``) to ``path`` atomically: temp file in the same folder, fsync, replace."""
    assert payload.get("format") == FORMAT, "checkpoint payload without the format tag"
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint. Only tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a loadable checkpoint of this format (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a loadable checkpoint (only tensors and plain containers are accepted; "
            f"torch.load(weights_only=True) said: {first_line})"
        ) from err
    if not isinstance(payload, dict) or "format" not in payload:
        raise ValueError(f"{path} is not an edge-encoder checkpoint (no 'format' entry)")
    if payload["format"] != FORMAT:
        raise ValueError(f"{path} has checkpoint format {payload['format']!r}; this code reads {FORMAT!r}")
    missing = [k for k in ("backbone", "backbone_config", "preprocess", "config") if k not in payload]
    if missing:
        raise ValueError(f"{path} lacks checkpoint entries {missing}")
    return payload


def load_backbone(path: Path | str) -> tuple[ResNetBackbone, dict[str, Any], dict[str, Any]]:
    """``(backbone in eval mode on CPU, preprocess dict, backbone_config dict)`` from a checkpoint.

    The backbone uses plain ``BatchNorm2d`` (split batch norm saves under the same keys).
    """
    payload = load_checkpoint(path)
    backbone = build_backbone(payload["backbone_config"])
    try:
        backbone.load_state_dict(payload["backbone"])
    except RuntimeError as err:
        raise ValueError(f"{path}: backbone weights do not match its backbone_config: {err}") from err
    backbone.eval()
    return backbone, dict(payload["preprocess"]), dict(payload["backbone_config"])
