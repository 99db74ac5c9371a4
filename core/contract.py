"""The image-input contract every engine honours: ``uint8 (N, H, W, 3)`` RGB in, ``float32 (N, D)`` out.

One definition of what an engine accepts (:class:`InputSpec`), of one image item of a sequence
(:func:`check_image_item`), of the preprocessing a trained encoder expects (:class:`Preprocess`: image size,
per-channel mean and std) and of the normalisation a float-NCHW graph expects (:func:`normalize_images`).

:class:`Preprocess` is the one form the preprocessing travels in between the layers (training run, checkpoint
loader, exporter, engines). It becomes a plain dict only where it is stored: the checkpoint's ``preprocess`` entry
(:meth:`Preprocess.to_dict` / :meth:`Preprocess.from_dict`) and the manifest's ``input.image_size`` and
``preprocessing`` (``device.manifest.manifest_preprocess`` / ``preprocessing_section``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# What each field of Preprocess must be; the words of every refusal (direct construction or a stored dict).
_PREPROCESS_FIELDS = {
    "image_size": "a positive integer (the side of the square input, pixels)",
    "mean": "a list of 3 finite numbers (RGB, 0..1 scale)",
    "std": "a list of 3 finite numbers > 0 (RGB, 0..1 scale)",
}


def _checked_field(name: str, value: Any) -> Any:
    """``value`` as ``Preprocess`` stores it (``int``, or a tuple of 3 Python floats), or ``None`` when it is not
    what ``_PREPROCESS_FIELDS[name]`` says. Strings are refused: ``float("0.5")`` would hide a corrupt entry."""
    if name == "image_size":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        return int(value) if ok else None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        return None
    items = list(value)
    if len(items) != 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
        return None
    floats = tuple(float(v) for v in items)
    if not all(math.isfinite(v) for v in floats) or (name == "std" and min(floats) <= 0):
        return None
    return floats


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing an encoder was trained with: uint8 ``(N, image_size, image_size, 3)`` RGB, scaled to
    [0, 1], then ``(x - mean) / std`` per channel.

    Checked on construction (``ValueError`` naming the field); ``mean`` / ``std`` are stored as tuples of 3 Python
    floats whatever sequence of reals they were given as (a list, NumPy floats), so two equal contracts compare
    equal and hash alike.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        for name, what in _PREPROCESS_FIELDS.items():
            value = getattr(self, name)
            checked = _checked_field(name, value)
            if checked is None:
                raise ValueError(f"preprocess {name} must be {what}, got {_short(value)}")
            object.__setattr__(self, name, checked)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (a checkpoint's ``preprocess`` entry): ``{"image_size": int, "mean": [3 floats],
        "std": [3 floats]}``."""
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: Any, *, source: str = "preprocess", key: str = "preprocess") -> Preprocess:
        """Read the stored form written by :meth:`to_dict`.

        Args:
            values: ``{"image_size", "mean", "std"}``, exactly those keys.
            source: where it was read from (a checkpoint path), named first in every error.
            key: the entry's name in ``source``; errors name ``key.field``.

        Raises:
            ValueError: one line ``<source>: key '<key>.<field>' must be ..., got ...`` (or the missing / unknown
                keys) when ``values`` is malformed.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: key {key!r} must be an object {{image_size, mean, std}}, got "
                             f"{type(values).__name__}")
        missing, unknown = sorted(set(_PREPROCESS_FIELDS) - set(values)), sorted(set(values) - set(_PREPROCESS_FIELDS))
        if missing or unknown:
            raise ValueError(f"{source}: key {key!r} must hold exactly {list(_PREPROCESS_FIELDS)}"
                             + (f"; missing keys {missing}" if missing else "")
                             + (f"; unknown keys {unknown}" if unknown else ""))
        checked = {}
        for name, what in _PREPROCESS_FIELDS.items():
            checked[name] = _checked_field(name, values[name])
            if checked[name] is None:
                raise ValueError(f"{source}: key '{key}.{name}' must be {what}, got {_short(values[name])}")
        return cls(**checked)


def as_preprocess(value: Preprocess | Mapping[str, Any], *, source: str = "preprocess") -> Preprocess:
    """``value`` itself, or the :class:`Preprocess` of its stored dict form (for callers that still pass the dict;
    ``ValueError`` naming ``source`` when it is malformed)."""
    if isinstance(value, Preprocess):
        return value
    return Preprocess.from_dict(value, source=source)


def normalization_of(value: Preprocess | Mapping[str, Any], *,
                     source: str = "preprocess") -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` of a :class:`Preprocess`, or of a ``{"mean", "std"}`` mapping (a user's declaration for a
    foreign ONNX file, which has no image size; extra keys such as a manifest section's are ignored).

    Raises:
        ValueError: naming ``source`` and the key when ``mean`` / ``std`` is missing or not 3 finite numbers
            (std > 0).
    """
    if isinstance(value, Preprocess):
        return value.mean, value.std
    if not isinstance(value, Mapping):
        raise ValueError(f"{source}: the normalisation must be a Preprocess or {{'mean', 'std'}}, got "
                         f"{type(value).__name__}")
    out = []
    for name in ("mean", "std"):
        if name not in value:
            raise ValueError(f"{source}: missing key {name!r} ({_PREPROCESS_FIELDS[name]})")
        checked = _checked_field(name, value[name])
        if checked is None:
            raise ValueError(f"{source}: key {name!r} must be {_PREPROCESS_FIELDS[name]}, got {_short(value[name])}")
        out.append(checked)
    return out[0], out[1]


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
