import os
from pathlib import Path

import pytest
import torch
from edge_encoder.core.contract import Preprocess
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from edge_encoder.train.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_backbone,
    load_checkpoint,
    plain_backbone_state,
    prune_checkpoints,
    save_checkpoint,
)


def _payload(width: int = 4) -> dict:
    backbone = build_backbone(BackboneConfig(width=width))
    return {"format": FORMAT, "backbone": plain_backbone_state(backbone),
            "backbone_config": BackboneConfig(width=width).to_dict(),
            "preprocess": {"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}, "config": {"width": width}}


def test_save_is_atomic_and_load_backbone_roundtrips(tmp_path: Path) -> None:
    payload = _payload()
    path = save_checkpoint(tmp_path / "c.pt", payload)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    backbone, preprocess, config = load_backbone(path)
    assert not backbone.training
    assert preprocess == Preprocess(16, (0.5,) * 3, (0.25,) * 3) and preprocess.to_dict() == payload["preprocess"]
    assert config == payload["backbone_config"]
    for key, value in payload["backbone"].items():
        assert torch.equal(backbone.state_dict()[key], value)


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", _payload())
    before = path.read_bytes()
    bad = _payload()
    bad["config"] = {"unpicklable": lambda: None}  # torch.save fails mid-way
    with pytest.raises(Exception):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), _payload())
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000015.pt", "step_000000020.pt"]


class _Exploit:
    """Unpickling this would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = _payload()
    payload["state"] = _Exploit(marker)
    torch.save(payload, path)
    with pytest.raises(ValueError, match=rf"{path} is not a loadable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_backbone(path)
    assert not marker.exists()


def test_missing_garbage_and_foreign_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_backbone(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt is not an edge-encoder checkpoint"):
        load_checkpoint(foreign)
    other = tmp_path / "v9.pt"
    torch.save({**_payload(), "format": "edge-encoder/moco-checkpoint/9"}, other)
    with pytest.raises(ValueError, match="v9.pt has checkpoint format"):
        load_checkpoint(other)


@pytest.mark.parametrize("preprocess, key", [
    ({"image_size": 16, "mean": [0.5] * 3, "std": [0.25, 0.0, 0.25]}, "preprocess.std"),
    ({"image_size": 16, "mean": [0.5] * 2, "std": [0.25] * 3}, "preprocess.mean"),
    ({"image_size": "16", "mean": [0.5] * 3, "std": [0.25] * 3}, "preprocess.image_size"),
    ({"image_size": 16, "mean": [0.5] * 3}, "missing keys ['std']"),
])
def test_a_malformed_preprocess_entry_is_named_when_loaded(tmp_path: Path, preprocess: dict, key: str) -> None:
    """Refused when the checkpoint is read (naming the file and the key), not later by an export or an engine."""
    path = save_checkpoint(tmp_path / "bad_pre.pt", {**_payload(), "preprocess": preprocess})
    for load in (load_checkpoint, load_backbone):
        with pytest.raises(CheckpointError, match=r"bad_pre\.pt: key '?preprocess") as err:
            load(path)
        assert key in str(err.value), err.value


def test_mismatched_backbone_weights_are_named(tmp_path: Path) -> None:
    payload = _payload(width=4)
    payload["backbone_config"] = BackboneConfig(width=8).to_dict()
    path = save_checkpoint(tmp_path / "mixed.pt", payload)
    with pytest.raises(ValueError, match="mixed.pt: backbone weights do not match"):
        load_backbone(path)
