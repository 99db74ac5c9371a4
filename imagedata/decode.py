"""Decoding one image file into the ``uint8 (S, S, 3)`` RGB every stage sees: one definition for the in-memory
and the streamed path (``imagedata.folder`` re-exports :func:`read_image`).

What a file becomes (each step tested in ``tests/imagedata/test_decode.py``):

1. **Pixel limit, before decoding.** ``Image.open`` reads the header only; a file whose width x height exceeds
   ``max_pixels`` (``data.max_image_pixels``, default :data:`DEFAULT_MAX_IMAGE_PIXELS` = 50 Mpx: a 48 Mpx phone
   photo passes, a 17 KB PNG claiming 12000 x 12000 does not) is refused naming the file, its size and the key.
   Pillow's own guard only warns up to 2 x ``Image.MAX_IMAGE_PIXELS`` (179 Mpx) and refuses beyond, whatever the
   limit here says.
2. **EXIF orientation** is applied (``ImageOps.exif_transpose``): a phone photo stored sideways is embedded
   upright.
3. **To 8-bit RGB.** 16-bit grey (Pillow modes ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I``, which Pillow
   uses for 16-bit PGM/TIFF; read as 0..65535, values outside clipped) keeps its high byte (``v >> 8``), as
   Pillow itself reduces 16-bit RGB(A) PNGs. ``convert("RGB")`` would clip those values at 255, i.e. white.
   Transparency (RGBA, LA, PA, a palette or grey image with a transparent colour) is composited over white,
   so an image does not depend on the colour of pixels nobody sees (the convention of vLLM's ``rgba_to_rgb``,
   vllm-project/vllm ``vllm/multimodal/image.py``, and transformers' ``convert_to_rgb``); premultiplied alpha
   (``RGBa``, ``La``) is un-premultiplied first, and a palette whose entries carry alpha counts as transparent.
   CMYK (Adobe-inverted JPEGs included), YCbCr (a YCbCr TIFF), HSV, RGBX, palette, grey and bilevel images go
   through Pillow's ``convert("RGB")``, whose conversions from these modes are the colour-space formulas.
   CIE L*a*b* (``LAB``: a LAB TIFF or PSD) is converted to sRGB through LittleCMS (``PIL.ImageCms``, D50 Lab
   profile to sRGB, as Pillow >= 9.4's own ``convert`` does); a Pillow built without LittleCMS refuses it.
   Every other mode is refused in one line naming the file and the mode, never guessed: floating-point images
   (``F``: no defined 0..255 scale), and any mode not listed here (e.g. the ``BGR;15/16/24`` of Pillow < 12).
4. **Fit**: centre crop to a square (aspect kept), bilinear resize to ``size x size``.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.imagedata.splits import DatasetError

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Part of the folder fingerprint: bump when the same file would decode differently (embedding caches then miss).
DECODER = "exif-transposed, 16-bit grey >> 8, alpha over white, PIL ImageOps.fit bilinear, RGB"
_GREY16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
# Modes whose Pillow conversion to RGB is correct as it is (colour-space formulas; palette lookup; padding dropped).
_CONVERT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")
# Every mode to_rgb decodes; any other mode (F, BGR;*, a mode a future Pillow adds) is refused naming it.
SUPPORTED_MODES = (*_CONVERT, *_ALPHA, *_GREY16, "LAB")


def read_image(path: Path | str, size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode one file as ``uint8 (size, size, 3)`` RGB (see the module docstring for each step).

    Raises:
        DatasetError: the file cannot be decoded, is larger than ``max_pixels`` or has floating-point pixels
            (the message names it).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below speaks instead
            with Image.open(path) as image:
                check_pixel_limit(image.size, path, max_pixels)
                upright = ImageOps.exif_transpose(image)
                fitted = ImageOps.fit(to_rgb(upright), (size, size), method=Image.Resampling.BILINEAR)
                return np.array(fitted, dtype=np.uint8)  # a writable copy (asarray would be a read-only view)
    except DatasetError:
        raise
    except Exception as exc:  # PIL raises many types for damaged files
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def check_pixel_limit(image_size: tuple[int, int], path: Path | str, max_pixels: int) -> None:
    """Raise ``DatasetError`` naming ``path`` when ``width * height`` (from the header) exceeds ``max_pixels``."""
    width, height = image_size
    if width * height > max_pixels:
        raise DatasetError(f"image {path} is {width}x{height} ({width * height / 1e6:.1f} Mpx), above the limit of "
                           f"{max_pixels:,} pixels (config key 'data.max_image_pixels', a guard against "
                           "decompression bombs); shrink the image or raise the limit")


def to_rgb(image: Any) -> Any:
    """A PIL image in mode ``RGB`` with 8 bits a channel, converted as the module docstring says.

    Raises:
        ValueError: a mode without a correct conversion here: floating-point (``F``), LAB without LittleCMS, or
            any mode not in :data:`SUPPORTED_MODES` (the message names the mode).
    """
    from PIL import Image

    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _GREY16:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return Image.fromarray((values >> 8).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        raise ValueError("floating-point pixels (mode F) have no defined 0..255 scale; save it as 8 or 16 bit")
    if mode == "LAB":
        return _lab_to_srgb(image)
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"image mode {mode!r} has no conversion to RGB here (decoded modes: "
                         f"{', '.join(SUPPORTED_MODES)}); save it as RGB")
    palette = getattr(image, "palette", None) if mode == "P" else None
    if mode in _ALPHA or "transparency" in image.info or getattr(palette, "mode", None) == "RGBA":
        if mode == "La":  # premultiplied: Pillow un-premultiplies to LA (La has no direct conversion to RGBA)
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _lab_to_srgb(image: Any) -> Any:
    """A ``LAB`` image as sRGB through LittleCMS (``PIL.ImageCms``); a ``ValueError`` where Pillow lacks it."""
    try:
        from PIL import ImageCms
    except ImportError as exc:  # Pillow built without LittleCMS
        raise ValueError(f"image mode 'LAB' (CIE L*a*b*) needs Pillow's ImageCms (LittleCMS) to become RGB, and this "
                         f"Pillow has none ({exc}); save it as RGB") from exc
    return ImageCms.applyTransform(image, _lab_transform())


@functools.lru_cache(maxsize=1)
def _lab_transform() -> Any:
    from PIL import ImageCms

    # Pillow's LAB mode holds L* 0..100 as 0..255 and a*, b* offset by 128 (LittleCMS TYPE_Lab_8); createProfile
    # ("LAB") is the D50 Lab profile Pillow's own LAB <-> RGB conversion uses.
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def header_readable(path: Path | str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bool:
    """Whether PIL recognises the file and its size is within ``max_pixels`` (reads the header only: ~20 us,
    against ~90 us for decoding a 32 px PNG)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size  # opening parses the header; nothing is decoded
        return width * height <= max_pixels
    except Exception:  # noqa: BLE001 - PIL raises many types for damaged files
        return False
