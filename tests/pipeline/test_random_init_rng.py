"""The random-init baseline is seeded without touching the global RNG (issue 17)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from edge_encoder import stages
from edge_encoder.train.backbones import BackboneConfig, build_backbone


def test_random_init_baseline_leaves_the_global_rng_state_unchanged(tmp_path: Path, monkeypatch) -> None:
    config = BackboneConfig(width=4)
    preprocess = {"image_size": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    trained = build_backbone(config).eval()  # stands in for a checkpoint's backbone
    monkeypatch.setattr("edge_encoder.stages.load_backbone",
                        lambda path: (trained, preprocess, config.to_dict()))
    settings = SimpleNamespace(train=SimpleNamespace(seed=3))
    bundle = SimpleNamespace(variants={}, manifest_path=tmp_path / "manifest.json")
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    seen = {}
    for kind, engine in stages.each_engine(settings, tmp_path / "step_1.pt", bundle, images):
        seen[engine.name] = kind
        if engine.name == "random_init":
            assert torch.equal(torch.get_rng_state(), before)  # seeded locally, the caller's stream untouched
            got = engine.embed(np.full((2, 8, 8, 3), 100, dtype=np.uint8))
    assert seen == {"pytorch_fp32": "reference", "raw_pixels": "baseline", "random_init": "baseline"}
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(3)  # the weights are those the seed always gave: the baseline's numbers are unchanged
    from edge_encoder.export.engines import TorchEngine

    with TorchEngine(build_backbone(config).eval(), preprocess, name="random_init") as reference:
        np.testing.assert_array_equal(got, reference.embed(np.full((2, 8, 8, 3), 100, dtype=np.uint8)))
