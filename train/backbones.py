"""Backbones: ResNets assembled from torchvision's residual blocks, with a width multiplier and a choice of stem.

A backbone maps a float batch ``(N, 3, H, W)`` (already normalised with the preprocessing mean/std) to
features ``(N, D)`` after global average pooling. It is what export/ receives; it knows nothing about
MoCo heads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

# name -> (block, blocks per stage)
RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
# name -> (conv kernel, conv stride, max-pool after it): the input side is divided by stride * (2 if max-pool).
# Which fits which size (benchmarks/train_photo_resolution.py, configs/photos_cpu.toml): at 64 px the /4 stem
# trains only 11% faster than /2 at width 16 and its 16x16 maps scored lower; at 96 px /2 costs 2.2x /4.
STEM_LAYOUTS: dict[str, tuple[int, int, bool]] = {
    "cifar": (3, 1, False),  # /1: images up to ~48 px (CIFAR, digits)
    "imagenet_nopool": (7, 2, False),  # /2: ~64 px, the ImageNet conv without its max-pool (as for Tiny-ImageNet)
    "imagenet": (7, 2, True),  # /4: torchvision's ResNet stem, ~96 px and up (224 px: 56x56 maps into layer1)
}
STEMS = tuple(STEM_LAYOUTS)


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone (stored in checkpoints and manifests).

    Attributes:
        arch: one of ``RESNET_LAYOUTS``.
        width: channels of the first stage (64 is the torchvision ResNet); smaller widths make CPU-sized models.
        stem: one of ``STEM_LAYOUTS``: ``"cifar"`` (3x3 conv, stride 1, no max-pool), ``"imagenet_nopool"``
            (7x7 conv stride 2, no max-pool) or ``"imagenet"`` (7x7 conv stride 2 + 3x3 max-pool stride 2).
    """

    arch: str = "resnet18"
    width: int = 64
    stem: str = "cifar"

    def __post_init__(self) -> None:
        if self.arch not in RESNET_LAYOUTS:
            raise ValueError(f"backbone arch {self.arch!r} is unknown; choose one of {sorted(RESNET_LAYOUTS)}")
        if self.stem not in STEMS:
            raise ValueError(f"backbone stem {self.stem!r} is unknown; choose one of {list(STEMS)}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"backbone width must be a positive integer, got {self.width!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResNetBackbone(nn.Module):
    """ResNet trunk without the classifier: ``(N, 3, H, W) float -> (N, out_dim) float``."""

    def __init__(self, config: BackboneConfig, norm_layer: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        block, layers = RESNET_LAYOUTS[config.arch]
        norm_layer = norm_layer or nn.BatchNorm2d
        self.config = config
        self._norm_layer = norm_layer
        w = config.width
        kernel, stride, pool = STEM_LAYOUTS[config.stem]
        self.conv1 = nn.Conv2d(3, w, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)
        self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pool else nn.Identity()
        self.bn1 = norm_layer(w)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = w
        self.layer1 = self._make_stage(block, w, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 8 * w * block.expansion
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last norm of each residual branch (Goyal et al.): each block starts as identity.
        for module in self.modules():
            last_bn = getattr(module, "bn3", None) if isinstance(module, Bottleneck) else getattr(module, "bn2", None)
            if isinstance(module, (BasicBlock, Bottleneck)) and isinstance(getattr(last_bn, "weight", None), torch.Tensor):
                nn.init.zeros_(last_bn.weight)

    def _make_stage(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        expansion = block.expansion  # type: ignore[attr-defined]
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * expansion, kernel_size=1, stride=stride, bias=False),
                self._norm_layer(planes * expansion),
            )
        # base_width=64 keeps Bottleneck's inner width = planes, whatever the width multiplier.
        stage = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes * expansion
        stage += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N x w x H' x W'
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # N x 8w*e x h x w
        return torch.flatten(self.avgpool(x), 1)  # N x out_dim


def build_backbone(config: BackboneConfig | dict[str, Any], norm_layer: Callable[[int], nn.Module] | None = None) -> ResNetBackbone:
    """Build a backbone from a ``BackboneConfig`` or its dict form (as stored in a checkpoint)."""
    if isinstance(config, dict):
        unknown = set(config) - set(BackboneConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown backbone config keys: {sorted(unknown)}")
        config = BackboneConfig(**config)
    return ResNetBackbone(config, norm_layer=norm_layer)
