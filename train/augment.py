"""Batched two-view augmentation on tensors (CPU or CUDA), per-sample random, seeded by a ``torch.Generator``.

Per-sample PIL/torchvision pipelines cost ~1 ms per image on a CPU core and starve a 2-core training loop.
Here a whole batch is augmented with a handful of batched kernels:

1. random resized crop + horizontal flip: one ``F.affine_grid`` / ``F.grid_sample`` call (a 2x3 affine per sample);
2. colour jitter (brightness, contrast, saturation, hue) and random grayscale: all are affine maps of the RGB
   vector, so per sample they compose into ONE 3x3 matrix plus an offset, applied with one ``torch.baddbmm``;
3. solarize (``x -> 1 - x`` above 0.5) and Gaussian blur (separable grouped convolution, per-sample sigma);
4. normalisation with the preprocessing mean/std.

Differences from torchvision's ``ColorJitter``: the four jitter operations are applied in a fixed order
(brightness, contrast, saturation, hue) instead of a random one, values are clamped to [0, 1] once at the end
instead of after each operation, and hue is rotated in YIQ space instead of shifted in HSV (same family of
hue changes, luma preserved exactly). The random-resized-crop sampler is torchvision's (10 tries of
area/ratio, then the full image), with continuous rather than integer crop offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from edge_encoder.train.distributed import local_rows

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_CROP_TRIES = 10


@dataclass(frozen=True)
class AugmentParams:
    """What one view's augmentation draws from (both MoCo views use the same distribution).

    ``blur_sigma`` is in pixels at 224 px and scales with ``out_size`` (MoCo v2 uses 0.1..2.0 at 224 px).
    Blur is only applied when ``out_size >= blur_min_size``: below that one pixel is already a large part of
    the object and blurring destroys more than it teaches.
    """

    out_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_min_scale: float = 0.2
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_min_size: int = 48
    solarize_prob: float = 0.0

    @property
    def blur_active(self) -> bool:
        return self.blur_prob > 0 and self.out_size >= self.blur_min_size


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` -> ``float32 (N, 3, H, W)`` in [0, 1] (a channels-last view, no extra copy)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def _crop_thetas(u: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Per-sample 2x3 affine (output -> input normalised coords) for random resized crop + flip.

    ``u``: ``(N, 2 * _CROP_TRIES + 3)`` uniform [0, 1) numbers. Returns ``(N, 2, 3)``.
    """
    n = u.shape[0]
    area = p.crop_min_scale + (1.0 - p.crop_min_scale) * u[:, :_CROP_TRIES]  # N x T, fraction of image area
    log_lo, log_hi = math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _CROP_TRIES:2 * _CROP_TRIES])  # N x T, width/height
    w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)  # N x T, fractions of the side
    valid = (w <= 1.0) & (h <= 1.0)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # N x 1, first valid try (0 if none)
    any_valid = valid.any(dim=1)
    w = torch.where(any_valid, w.gather(1, first).squeeze(1), torch.ones_like(any_valid, dtype=u.dtype))  # N
    h = torch.where(any_valid, h.gather(1, first).squeeze(1), torch.ones_like(any_valid, dtype=u.dtype))  # N
    cx = (1.0 - w) * (2.0 * u[:, -3] - 1.0)  # N, crop centre in [-1, 1] coords, crop stays inside the image
    cy = (1.0 - h) * (2.0 * u[:, -2] - 1.0)
    flip = torch.where(u[:, -1] < p.flip_prob, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, dtype=u.dtype, device=u.device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def _colour_affine(u: torch.Tensor, x_mean_rgb: torch.Tensor, p: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(A, t)`` so that jitter + grayscale is ``A @ rgb + t``.

    ``u``: ``(N, 6)`` uniforms (apply-jitter, b, c, s, h, apply-grey); ``x_mean_rgb``: ``(N, 3)`` mean colour of
    each cropped view (contrast blends towards its mean luma). Returns ``A (N, 3, 3)``, ``t (N, 3)``.
    """
    n, dev, dt = u.shape[0], u.device, u.dtype
    jitter = u[:, 0] < p.jitter_prob  # N
    one = torch.ones(n, device=dev, dtype=dt)

    def factor(v: torch.Tensor, strength: float) -> torch.Tensor:
        return torch.where(jitter, 1.0 - strength + 2.0 * strength * v, one)

    b, c, s = factor(u[:, 1], p.brightness), factor(u[:, 2], p.contrast), factor(u[:, 3], p.saturation)  # N
    angle = torch.where(jitter, (2.0 * u[:, 4] - 1.0) * p.hue * 2.0 * math.pi, torch.zeros_like(one))  # N
    luma = torch.tensor(_LUMA, device=dev, dtype=dt)  # 3
    eye = torch.eye(3, device=dev, dtype=dt)
    grey_m = torch.ones(3, 1, device=dev, dtype=dt) * luma  # 3x3, every output channel = luma
    sat = s[:, None, None] * eye + (1.0 - s)[:, None, None] * grey_m  # N x 3 x 3
    yiq = torch.tensor(_RGB_TO_YIQ, device=dev, dtype=dt)
    rot = torch.zeros(n, 3, 3, device=dev, dtype=dt)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    hue = torch.linalg.inv(yiq) @ rot @ yiq  # N x 3 x 3, fixes grey (1,1,1) and luma
    grey = torch.where((u[:, 5] < p.grayscale_prob)[:, None, None], grey_m, eye)  # N x 3 x 3
    a = grey @ hue @ sat * (c * b)[:, None, None]  # N x 3 x 3
    # Contrast blends towards the mean luma of the brightness-scaled image; grey, hue and saturation all map
    # the grey vector (1,1,1) to itself, so the offset passes through them unchanged.
    mean_luma = x_mean_rgb @ luma  # N
    t = ((1.0 - c) * b * mean_luma)[:, None].expand(n, 3)  # N x 3
    return a, t


def _blur(x: torch.Tensor, u: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Per-sample separable Gaussian blur. ``x``: ``(N, 3, S, S)``; ``u``: ``(N, 2)`` (apply, sigma)."""
    n, _, size, _ = x.shape
    scale = size / 224.0
    lo, hi = p.blur_sigma[0] * scale, p.blur_sigma[1] * scale
    sigma = lo + (hi - lo) * u[:, 1]  # N, pixels
    radius = max(1, math.ceil(3.0 * hi))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # k
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)  # N x k
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(x.dtype).expand(n, -1)
    kernel = torch.where((u[:, 0] < p.blur_prob)[:, None], kernel, delta)  # N x k, identity when not blurred
    kernel = kernel.repeat_interleave(3, dim=0)  # 3N x k, one filter per (sample, channel)
    flat = F.pad(x.reshape(1, 3 * n, size, size), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=3 * n)  # horizontal pass
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=3 * n)  # vertical pass
    return flat.reshape(n, 3, size, size)


def augment_view(x: torch.Tensor, p: AugmentParams, generator: torch.Generator,
                 shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """One augmented, normalised view of a batch.

    Args:
        x: ``float32 (N, 3, H, W)`` in [0, 1] (see ``to_float_nchw``), on the generator's device.
        p: augmentation parameters.
        generator: source of all randomness (one draw per call, so a saved state replays exactly).
        shard: ``(rank, world)`` when ``x`` holds rows ``rank * N .. (rank + 1) * N - 1`` of a global batch of
            ``world * N`` samples (DDP, see ``train.distributed``). The random numbers are drawn for the whole
            global batch and this rank keeps its rows, so every sample gets exactly the view one process would
            give it, while each rank renders only its own samples; the generator advances identically on every
            rank. (Rendering the whole global batch on every rank and slicing would cost ``world`` times more.)

    Returns:
        ``float32 (N, 3, out_size, out_size)``, normalised with ``p.mean`` / ``p.std``.
    """
    n, size = x.shape[0], p.out_size
    rank, world = shard
    u = torch.rand(n * world, 2 * _CROP_TRIES + 3 + 6 + 2 + 1, generator=generator, device=x.device,
                   dtype=torch.float32)  # one row of random numbers per sample of the global batch
    if world > 1:
        u = local_rows(u, rank, world)  # N x D, this rank's samples (its block of the global batch)
    u_crop, u_col, u_blur, u_sol = u[:, :2 * _CROP_TRIES + 3], u[:, -9:-3], u[:, -3:-1], u[:, -1]
    grid = F.affine_grid(_crop_thetas(u_crop, p), [n, 3, size, size], align_corners=False)  # N x S x S x 2
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)  # N x 3 x S x S
    v = v.contiguous().view(n, 3, size * size)  # N x 3 x P
    a, t = _colour_affine(u_col, v.mean(dim=2), p)
    v = torch.baddbmm(t[:, :, None], a, v).clamp_(0.0, 1.0)  # N x 3 x P
    if p.solarize_prob > 0:
        v = torch.where((u_sol < p.solarize_prob)[:, None, None] & (v >= 0.5), 1.0 - v, v)
    v = v.view(n, 3, size, size)
    if p.blur_active:
        v = _blur(v, u_blur, p)
    mean = torch.tensor(p.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    std = torch.tensor(p.std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return v.sub_(mean).div_(std)


def two_views(images: torch.Tensor, p: AugmentParams, generator: torch.Generator,
              shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 (N, H, W, 3)`` -> two independently augmented ``float32 (N, 3, S, S)`` views (query, key).

    ``shard``: this rank's share of a global batch, as in ``augment_view``."""
    x = to_float_nchw(images)
    return augment_view(x, p, generator, shard), augment_view(x, p, generator, shard)
