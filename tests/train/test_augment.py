import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from edge_encoder.train.augment import (
    AugmentParams,
    _colour_affine,
    augment_view,
    to_float_nchw,
    two_views,
)

ZERO_ONE = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
NO_AUG = dict(crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)


def _images(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_shapes_dtype_normalisation_and_reproducibility() -> None:
    p = AugmentParams(out_size=24, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), blur_prob=0.5, blur_min_size=16,
                      solarize_prob=0.5)
    a1, b1 = two_views(_images(), p, torch.Generator().manual_seed(3))
    a2, b2 = two_views(_images(), p, torch.Generator().manual_seed(3))
    assert a1.shape == (6, 3, 24, 24) and a1.dtype == torch.float32
    assert torch.equal(a1, a2) and torch.equal(b1, b2)  # same seed, same views
    assert not torch.equal(a1, b1)  # the two views differ
    lo = (0 - 0.5) / 0.2
    assert a1.min() >= lo - 1e-5


def test_no_augmentation_is_the_identity_and_flip_flips() -> None:
    x = to_float_nchw(_images())
    g = torch.Generator().manual_seed(0)
    same = augment_view(x, AugmentParams(out_size=16, **ZERO_ONE, **NO_AUG), g)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-6)
    flipped = augment_view(x, AugmentParams(out_size=16, **ZERO_ONE, **{**NO_AUG, "flip_prob": 1.0}), g)
    torch.testing.assert_close(flipped, x.flip(-1), rtol=0, atol=1e-6)


def test_crops_are_inside_the_image_and_scale_within_bounds() -> None:
    # A horizontal ramp image: the crop's left/right edge values tell where it sits.
    ramp = torch.linspace(0, 1, 64).expand(4, 3, 64, 64).contiguous()
    p = AugmentParams(out_size=64, **ZERO_ONE, **{**NO_AUG, "crop_min_scale": 0.25, "crop_ratio": (1.0, 1.0)})
    v = augment_view(ramp.repeat(50, 1, 1, 1), p, torch.Generator().manual_seed(0))
    span = v[:, 0, 0, -1] - v[:, 0, 0, 0]  # ~ crop width fraction (square crops: sqrt(area))
    assert span.min() >= math.sqrt(0.25) - 0.05 and span.max() <= 1.0 + 1e-6
    assert v.min() >= 0.0 and v.max() <= 1.0


def test_colour_matrix_matches_torchvision_ops() -> None:
    """Brightness -> contrast -> saturation (fixed order) and grayscale equal torchvision's functional ops
    where no clamping happens (mid-range image, mild factors)."""
    x = 0.35 + 0.3 * torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    b, c, s = 1.1, 0.9, 1.2
    strength = 0.3
    # invert factor = 1 - strength + 2 * strength * u
    u = torch.tensor([[0.0, (b - 1 + strength) / (2 * strength), (c - 1 + strength) / (2 * strength),
                       (s - 1 + strength) / (2 * strength), 0.5, 1.0]])
    p = AugmentParams(out_size=8, **ZERO_ONE, brightness=strength, contrast=strength, saturation=strength, hue=0.1)
    flat = x.view(1, 3, 64)
    a, t = _colour_affine(u, flat.mean(dim=2), p)
    ours = (torch.baddbmm(t[:, :, None], a, flat)).view(1, 3, 8, 8)
    ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-3)
    u_grey = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.5, 0.0]])  # no jitter, grayscale on
    a, t = _colour_affine(u_grey, flat.mean(dim=2), p)
    grey = torch.baddbmm(t[:, :, None], a, flat).view(1, 3, 8, 8)
    torch.testing.assert_close(grey, TF.rgb_to_grayscale(x, num_output_channels=3), rtol=0, atol=2e-3)


def test_hue_rotation_preserves_luma_and_grey() -> None:
    p = AugmentParams(out_size=8, **ZERO_ONE, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5)
    u = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.9, 1.0]])  # jitter on, only hue moves
    a, t = _colour_affine(u, torch.zeros(1, 3), p)
    luma = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(luma @ a[0], luma, rtol=0, atol=1e-5)  # luma unchanged
    torch.testing.assert_close(a[0] @ torch.ones(3), torch.ones(3), rtol=0, atol=1e-5)  # grey stays grey
    assert not torch.allclose(a[0], torch.eye(3), atol=1e-2)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, H, W, 3\)"):
        to_float_nchw(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
