"""Which preset a run gets: image files without --config get the photo preset (64 px), not the digits' 16 px; the
shipped presets build the backbones they name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edge_encoder import stages
from edge_encoder.commands.options import resolve_run_config
from edge_encoder.commands.run import build_parser
from edge_encoder.settings import Settings, validate_config
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def settings_of(*argv: str) -> Settings:
    args = build_parser().parse_args(list(argv))
    return validate_config(resolve_run_config(args), None)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """``train/<class>/`` + ``test/<class>/`` of 40x30 px JPEGs (photo-like: not square, not 16 px)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / "photos" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return tmp_path / "photos"


@pytest.mark.parametrize("argv", [
    ["--dataset", "folder:{root}"],
    ["--train-data", "images:{root}/train"],
    ["--set", "data.dataset='folder:{root}'"],
])
def test_image_files_without_a_preset_get_the_photo_preset(photo_folder: Path, argv: list[str], caplog) -> None:
    caplog.set_level("INFO", logger="edge_encoder.commands.options")
    settings = settings_of(*(a.format(root=photo_folder) for a in argv))
    assert settings.name == "photos_cpu"
    assert settings.data.image_size == 64 and settings.train.stem == "imagenet_nopool"
    assert "photos_cpu" in caplog.text and "16 px" in caplog.text  # the switch is said, not silent


def test_folder_with_the_default_preset_loads_photo_sized_images(photo_folder: Path) -> None:
    data = stages.load_run_data(settings_of("--dataset", f"folder:{photo_folder}").data)
    assert data.train_images.shape == (8, 64, 64, 3)
    assert data.evaluation.x_test.shape == (4, 64, 64, 3)


def test_other_datasets_and_explicit_presets_keep_their_preset(photo_folder: Path) -> None:
    assert settings_of().name == "digits_cpu" and settings_of().data.image_size == 16
    assert settings_of("--dataset", "npz:x.npz").name == "digits_cpu"
    chosen = settings_of("--config", "digits_cpu", "--dataset", f"folder:{photo_folder}")
    assert chosen.name == "digits_cpu" and chosen.data.image_size == 16  # an explicit --config is obeyed
    sized = settings_of("--dataset", f"folder:{photo_folder}", "--set", "data.image_size=96")
    assert sized.name == "photos_cpu" and sized.data.image_size == 96  # --set overrides the photo preset


@pytest.mark.parametrize("preset", sorted((PROJECT_ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_preset_builds_its_backbone(preset: Path) -> None:
    """Beyond validation (tests/pipeline/test_cli.py): the arch, width and stem make a backbone whose features
    come out of an image of the preset's size."""
    import torch

    settings = settings_of("--config", str(preset))
    train = settings.train
    backbone = build_backbone(BackboneConfig(arch=train.arch, width=train.width, stem=train.stem)).eval()
    size = settings.data.image_size or 32
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, size, size)).shape == (1, backbone.out_dim)
