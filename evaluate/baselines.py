"""Baseline engines that need no model file: raw pixels, mean-centred and L2-normalised.

They follow the engine contract (docs/CONTRACTS.md) so they go through the same extraction, cache and
metrics as the exported encoders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import TracebackType

import numpy as np
from edge_encoder.core.contract import InputSpec, check_image_item
from edge_encoder.evaluate.extract import ImageSource
from edge_encoder.evaluate.validation import l2_normalize

CENTERINGS = ("train_mean", "image")


class RawPixelEngine:
    """The "raw pixels" baseline: flatten to float, subtract the train-set mean image, L2-normalise.

    Args:
        train_images: ``uint8 (N, H, W, 3)`` train split; only its mean image is kept. Or an image source
            (``len``, ``[i] -> uint8 (H, W, 3)``, e.g. a folder decoded on access): with ``"train_mean"`` its mean
            image is accumulated over one pass, one item at a time (exactly the array's mean); with ``"image"``
            only item 0 is read (for the input size), as the mean image does not enter the embeddings.
        name: engine name used in reports.
        centering: ``"train_mean"`` subtracts the train-set mean image (the default); ``"image"`` subtracts
            each image's own mean pixel value instead. On cifar10_dev, weighted kNN k=20 T=0.07 gives
            0.3975 top-1 with ``"train_mean"`` and 0.4085 with ``"image"`` (the data README's 0.407 is
            per-image centring with a plain majority vote).
    """

    source_path: Path | None = None

    def __init__(self, train_images: np.ndarray | ImageSource, name: str = "raw_pixels",
                 centering: str = "train_mean") -> None:
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {list(CENTERINGS)}, got {centering!r}")
        self.centering = centering
        self.name = name
        if not isinstance(train_images, np.ndarray):
            self._init_from_source(train_images)
            return
        if train_images.ndim != 4 or train_images.shape[-1] != 3:
            raise ValueError(f"train_images must be (N, H, W, 3), got {getattr(train_images, 'shape', None)}")
        if train_images.shape[0] == 0:
            raise ValueError("train_images is empty: cannot compute the mean image")
        self.input_spec = InputSpec(height=int(train_images.shape[1]), width=int(train_images.shape[2]))
        # float64 accumulation: a float32 sum over 1e6 images loses the low bits of the mean.
        self.mean = train_images.reshape(train_images.shape[0], -1).mean(axis=0, dtype=np.float64).astype(np.float32)
        # No model file to hash: identify the engine by what determines its output (the mean image).
        self.cache_token = f"raw_pixels:{centering}:" + hashlib.sha256(self.mean.tobytes()).hexdigest()[:32]

    def _init_from_source(self, images: ImageSource) -> None:
        if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")) or len(images) == 0:
            raise ValueError(f"train_images must be (N, H, W, 3) or a non-empty image sequence, got "
                             f"{type(images).__name__}" + (" of 0 items" if hasattr(images, "__len__") else ""))
        first = check_image_item(images[0], 0, None)
        self.input_spec = InputSpec(height=int(first.shape[0]), width=int(first.shape[1]))
        if self.centering == "image":
            # Each image is centred on itself: nothing of the train split enters the output but its image size,
            # so no pass over it (the array path's token hashes a mean image it never uses; this one cannot).
            self.mean = None
            self.cache_token = f"raw_pixels:image:{first.shape[0]}x{first.shape[1]}"
            return
        # Integer sums are exact, so the float64 division gives the array path's mean bit for bit (its float64
        # sum of uint8 values is exact below 2**53 as well).
        total = first.reshape(-1).astype(np.int64)
        for i in range(1, len(images)):
            total += check_image_item(images[i], i, first.shape).reshape(-1)
        self.mean = (total.astype(np.float64) / len(images)).astype(np.float32)
        self.cache_token = "raw_pixels:train_mean:" + hashlib.sha256(self.mean.tobytes()).hexdigest()[:32]

    def embed(self, images: np.ndarray) -> np.ndarray:
        """``uint8 (N, H, W, 3)`` -> ``float32 (N, H*W*3)``, rows L2-normalised."""
        spec = self.input_spec
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be a uint8 array, got {getattr(images, 'dtype', type(images))}")
        if images.ndim != 4 or images.shape[1:] != (spec.height, spec.width, spec.channels):
            raise ValueError(
                f"{self.name}: images must be (N, {spec.height}, {spec.width}, 3), got shape {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}: empty batch")
        x = images.reshape(images.shape[0], -1).astype(np.float32)
        x = x - (self.mean if self.centering == "train_mean" else x.mean(axis=1, keepdims=True))
        return l2_normalize(x)

    def __enter__(self) -> "RawPixelEngine":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
