"""The image-input contract every engine honours: ``uint8 (N, H, W, 3)`` RGB in, ``float32 (N, D)`` out.

One definition of what an engine accepts (:class:`InputSpec`), of one image item of a sequence
(:func:`check_image_item`) and of the normalisation a float-NCHW graph expects (:func:`normalize_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """What ``embed`` accepts: ``dtype`` ``(N, height, width, channels)`` in ``layout``."""

    height: int
    width: int
    channels: int = 3
    dtype: str = "uint8"
    layout: str = "NHWC"

    def validate(self, images: Any) -> np.ndarray:
        """Return ``images`` as a C-contiguous array, or raise ``ValueError``/``TypeError`` naming the problem."""
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy.ndarray, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, {self.height}, {self.width}, {self.channels}) "
                             f"({self.layout}), got shape {images.shape}")
        if images.shape[0] == 0:
            raise ValueError(f"empty batch: images has shape {images.shape}")
        if images.shape[3] != self.channels:
            raise ValueError(f"images must have {self.channels} channels (RGB, last axis), got shape {images.shape}")
        if images.shape[1:3] != (self.height, self.width):
            raise ValueError(f"images must be {self.height}x{self.width} (H x W), got shape {images.shape}")
        if images.dtype != np.dtype(self.dtype):
            raise ValueError(f"images must have dtype {self.dtype}, got dtype {images.dtype}")
        return np.ascontiguousarray(images)


def check_uint8_nhwc(name: str, images: Any, size: int | None = None, *, allow_empty: bool = False) -> np.ndarray:
    """``images`` if it is a ``uint8 (N, H, W, 3)`` array (``H = W = size`` when given), else a ``ValueError``
    naming ``name``, the dtype and the shape."""
    ok = isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
    if ok and size is not None:
        ok = images.shape[1:3] == (size, size)
    if ok and not allow_empty:
        ok = len(images) > 0
    if not ok:
        want = f"(N, {size}, {size}, 3)" if size is not None else "(N, H, W, 3)"
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}uint8 {want} RGB array, got {got}")
    return images


def check_image_item(item: object, index: int, expected: tuple[int, ...] | None = None, *,
                     what: str = "image") -> np.ndarray:
    """``item`` if it is a ``uint8 (H, W, 3)`` array (of shape ``expected`` when given), else a ``ValueError``
    naming ``what`` and ``index`` (bad data, not a programming error, so a ValueError even for a non-array)."""
    if not isinstance(item, np.ndarray):
        raise ValueError(f"{what} {index} is a {type(item).__name__}; every {what} must be a numpy uint8 (H, W, 3) "
                        "RGB array")
    if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
        raise ValueError(f"{what} {index} is {item.dtype} {item.shape}; every {what} must be a numpy uint8 "
                         "(H, W, 3) RGB array")
    if expected is not None and item.shape != expected:
        raise ValueError(f"{what} {index} has shape {item.shape} but {what} 0 has {expected}; every {what} must "
                         "have the same size (e.g. FolderImages fits each image to image_size)")
    return item


def normalize_images(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, 3, H, W)`` ``((x / 255) - mean) / std``.

    The same float32 operations in the same order as the in-graph ``preprocess/*`` nodes (cast, NCHW,
    ``x * (1 / (255 std)) + (-mean / std)``), so a float-NCHW graph fed this gives the uint8 graph's embeddings.
    """
    mean64, std64 = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    scale = (1.0 / (255.0 * std64)).astype(np.float32).reshape(1, 3, 1, 1)
    bias = (-mean64 / std64).astype(np.float32).reshape(1, 3, 1, 1)
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x * scale + bias, dtype=np.float32)
