"""Checkpoints: atomic writes, the last N kept, safe loading (``weights_only=True``), backbone extraction.

Format (docs/CONTRACTS.md): a ``torch.save`` dict with ``format``, ``backbone`` (plain ``ResNetBackbone`` keys),
``backbone_config``, ``preprocess``, ``config``, plus the full training state under ``state``.

A checkpoint is *good* when it loads, carries its training state and every floating-point tensor in it is finite
(:func:`first_nonfinite`). The loop writes only good ones, and a resume takes the newest good one
(:func:`newest_good_checkpoint`): a newer file that is truncated, malformed or non-finite is skipped with a
warning naming it, and left on disk.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.core.errors import InputError
from edge_encoder.core.files import atomic_write
from edge_encoder.train.backbones import ResNetBackbone, build_backbone
from torch import nn

FORMAT = "edge-encoder/moco-checkpoint/1"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
# What a resume reads from ``payload["state"]`` (the loop's ``_Run.payload`` writes them all).
STATE_KEYS = ("model", "optimizer", "step", "rng", "last_loss")

logger = logging.getLogger(__name__)


class CheckpointError(InputError):
    """A checkpoint file that cannot be used: unreadable, foreign, or lacking an entry (the message names the file
    and the entry)."""


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
    """Write ``payload`` (must carry ``format``) to ``path`` atomically: temp file in the same folder, fsync, replace.

    Raises:
        OSError: the file cannot be written (a full disk, a read-only folder), naming ``path``; no temp file is
            left and an older file at ``path`` is kept.
    """
    assert payload.get("format") == FORMAT, "checkpoint payload without the format tag"
    atomic_write(path, lambda f: _torch_save(payload, f))
    return path


class _WriteRecorder:
    """A file wrapper that remembers the first ``OSError`` of ``write``: ``torch.save`` reports a failed write (e.g.
    ENOSPC) as a ``RuntimeError`` from its zip writer ("unexpected pos ..."), which hides the cause."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(payload: dict[str, Any], f: BinaryIO) -> None:
    recorder = _WriteRecorder(f)
    try:
        torch.save(payload, recorder)  # type: ignore[arg-type]
    except RuntimeError as exc:
        if recorder.error is not None:
            raise recorder.error from exc
        raise


def first_nonfinite(tree: Any, prefix: str = "") -> str | None:
    """The dotted name (``"state.model.backbone_k.layer1.0.bn1.running_var"``) of the first floating-point tensor in
    a nested dict/list payload holding NaN or inf, or ``None`` when every one is finite.

    The max-norm of every tensor in one ``torch._foreach_norm`` call (NaN and inf propagate into it, and unlike a
    sum or a 2-norm it cannot overflow for finite values), then one host sync: no copy of the state, one read of
    each value, about half the time of ``isfinite(t).all()`` per tensor on this 2-core CPU, and of the order of
    the ``torch.save`` that follows. Integer tensors (RNG states, step counters) cannot be non-finite and are not
    read."""
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    _collect_floating(tree, prefix, names, tensors)
    if not tensors:
        return None
    flags = torch.stack([n.float().cpu() for n in _max_norms(tensors)]).isfinite()
    if bool(flags.all()):
        return None
    return names[int((~flags).nonzero()[0])]


def _max_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor ``max |x|`` (NaN where a tensor holds NaN). ``torch._foreach_norm`` is what
    ``torch.nn.utils.clip_grad_norm_`` uses (torch/nn/utils/clip_grad.py); per-tensor ``vector_norm`` otherwise."""
    foreach = getattr(torch, "_foreach_norm", None)
    if foreach is not None:
        try:
            return list(foreach(tensors, float("inf")))
        except (RuntimeError, TypeError):  # e.g. a dtype the fused kernel lacks: the plain loop below
            pass
    return [torch.linalg.vector_norm(t, float("inf")) if t.numel() else t.new_zeros(()) for t in tensors]


def _collect_floating(tree: Any, prefix: str, names: list[str], tensors: list[torch.Tensor]) -> None:
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            names.append(prefix or "<tensor>")
            tensors.append(tree.detach())
    elif isinstance(tree, dict):
        for key, value in tree.items():
            _collect_floating(value, f"{prefix}.{key}" if prefix else str(key), names, tensors)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            _collect_floating(value, f"{prefix}.{i}" if prefix else str(i), names, tensors)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint. Only tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: (a ``ValueError``) the file is not a loadable checkpoint of this format, or an entry is
            missing or mistyped, ``preprocess`` included (the message names the file and the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a loadable checkpoint (only tensors and plain containers are accepted; "
            f"torch.load(weights_only=True) said: {first_line})"
        ) from err
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path} is not an edge-encoder checkpoint (no 'format' entry)")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {payload['format']!r}; this code reads {FORMAT!r}")
    missing = [k for k in ("backbone", "backbone_config", "preprocess", "config") if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks checkpoint entries {missing}")
    for key, kind in (("backbone", dict), ("backbone_config", dict), ("preprocess", dict), ("config", dict)):
        if not isinstance(payload[key], kind):
            raise CheckpointError(f"{path}: entry '{key}' must be a {kind.__name__}, got {type(payload[key]).__name__}")
    checkpoint_preprocess(payload, path)  # refused here, not later in an export or an engine
    return payload


def checkpoint_preprocess(payload: dict[str, Any], path: Path | str) -> Preprocess:
    """The preprocessing of a loaded checkpoint: its ``preprocess`` entry (stored as ``Preprocess.to_dict``).

    Raises:
        CheckpointError: naming ``path`` and the malformed key (``preprocess.std`` ...).
    """
    try:
        return Preprocess.from_dict(payload.get("preprocess"), source=str(path), key="preprocess")
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def check_training_state(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """``payload["state"]`` after checking what a resume needs: the entries ``STATE_KEYS``, an int step, and every
    floating-point tensor of the payload finite.

    Raises:
        CheckpointError: naming ``path`` and the missing, mistyped or non-finite entry.
    """
    state = payload.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no training state (entry 'state' is "
                              f"{'missing' if state is None else type(state).__name__}); it cannot be resumed")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: entry 'state' lacks {missing}; it cannot be resumed")
    for key, kind in (("model", dict), ("optimizer", dict), ("rng", dict)):
        if not isinstance(state[key], kind):
            raise CheckpointError(f"{path}: entry 'state.{key}' must be a dict, got {type(state[key]).__name__}")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"{path}: entry 'state.step' must be an int >= 0, got {state['step']!r}")
    bad = first_nonfinite(payload)
    if bad is not None:
        raise CheckpointError(f"{path}: entry '{bad}' holds NaN/inf")
    return state


def newest_good_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``(path, payload)`` of the newest checkpoint of ``run_dir`` that loads and passes :func:`check_training_state`,
    or ``None`` when there is no checkpoint. Newer ones that do not (a truncated file, one without its state, one
    holding NaN/inf) are skipped with a warning naming them, and left on disk.

    Raises:
        CheckpointError: there are checkpoints, but none is good (naming the newest and why).
    """
    found = list_checkpoints(run_dir)
    reasons: list[str] = []
    for path in reversed(found):
        try:
            payload = load_checkpoint(path, map_location="cpu")
            check_training_state(payload, path)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint %s (left on disk): %s", path, exc)
            reasons.append(str(exc))
            continue
        return path, payload
    if found:
        raise CheckpointError(f"none of the {len(found)} checkpoints in {checkpoint_dir(run_dir)} can be resumed "
                              f"(newest: {reasons[0]}); move them away to train afresh")
    return None


def last_good_checkpoint(run_dir: Path) -> Path | None:
    """The path :func:`newest_good_checkpoint` finds, or ``None`` (also when none is good): for messages."""
    try:
        found = newest_good_checkpoint(run_dir)
    except CheckpointError:
        return None
    return found[0] if found else None


def load_backbone(path: Path | str) -> tuple[ResNetBackbone, Preprocess, dict[str, Any]]:
    """``(backbone in eval mode on CPU, its Preprocess, backbone_config dict)`` from a checkpoint.

    The backbone uses plain ``BatchNorm2d`` (split batch norm saves under the same keys).
    """
    payload = load_checkpoint(path)
    try:
        backbone = build_backbone(payload["backbone_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: entry 'backbone_config' is not a backbone config: {err}") from err
    try:
        backbone.load_state_dict(payload["backbone"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: backbone weights do not match its backbone_config: {err}") from err
    backbone.eval()
    return backbone, checkpoint_preprocess(payload, path), dict(payload["backbone_config"])
