"""Backbone stems at photo resolutions: output shapes, feature-map sizes, parameter counts against torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision
from edge_encoder.train.backbones import STEM_LAYOUTS, BackboneConfig, build_backbone


def layer1_side(backbone: torch.nn.Module, size: int) -> int:
    """Side of the first residual stage's feature map for a ``size`` px input."""
    seen = []
    handle = backbone.layer1.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        out = backbone.eval()(torch.randn(2, 3, size, size))
    handle.remove()
    assert out.shape == (2, backbone.out_dim) and torch.isfinite(out).all()
    return seen[0]


@pytest.mark.parametrize("stem, size, side", [
    ("cifar", 32, 32),
    ("imagenet_nopool", 64, 32), ("imagenet_nopool", 96, 48),
    ("imagenet", 64, 16), ("imagenet", 96, 24), ("imagenet", 224, 56),
])
def test_stem_downsampling_and_output_shape(stem: str, size: int, side: int) -> None:
    backbone = build_backbone(BackboneConfig(arch="resnet18", width=8, stem=stem))
    assert backbone.out_dim == 64
    assert layer1_side(backbone, size) == side


@pytest.mark.parametrize("stem", list(STEM_LAYOUTS))
def test_parameter_count_is_torchvision_resnet18_but_for_conv1(stem: str) -> None:
    reference = torchvision.models.resnet18()
    expected = sum(p.numel() for name, p in reference.named_parameters() if not name.startswith(("fc.", "conv1.")))
    kernel = STEM_LAYOUTS[stem][0]
    backbone = build_backbone(BackboneConfig(arch="resnet18", width=64, stem=stem))
    assert sum(p.numel() for p in backbone.parameters()) == expected + 3 * 64 * kernel * kernel
    if stem == "imagenet":
        assert expected + 3 * 64 * 49 == 11_176_512  # torchvision's 11,689,512 without the 512 x 1000 + 1000 classifier


def test_imagenet_stem_is_torchvision_resnet_trunk() -> None:
    """torchvision's ResNet-18 weights load into the ImageNet-stem backbone and give the same 224 px features."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    backbone = build_backbone(BackboneConfig(arch="resnet18", width=64, stem="imagenet")).eval()
    backbone.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), reference(x))


def test_unknown_stem_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="stem 'vit'.*imagenet_nopool"):
        BackboneConfig(stem="vit")
