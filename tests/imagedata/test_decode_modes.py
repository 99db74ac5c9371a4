"""imagedata.decode over every image mode Pillow has (``Image.MODES``): each one is decoded to the right RGB, or
refused in one line naming the file and the mode; never decoded wrong silently (issue 18: a LAB TIFF of mid grey
must not come out blue).

Files are written with Pillow in a format that keeps the mode where one does (TIFF for LAB, YCbCr, CMYK, PA, ...);
the modes no file format keeps (HSV, RGBa, La, I;16N) are checked through ``to_rgb`` on the in-memory image."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError
from edge_encoder.imagedata.decode import SUPPORTED_MODES, read_image, to_rgb
from PIL import Image

COLOUR = (200, 50, 100)
GREY = 101  # what Pillow's RGB -> L makes of COLOUR (ITU-R 601-2 luma)


def _rgb(colour: tuple[int, int, int] = COLOUR, size: int = 6) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def _palette(mode: str) -> Image.Image:
    image = Image.new("P", (6, 6), 1)
    image.putpalette([0, 0, 0, *COLOUR] + [0] * 762)
    return image if mode == "P" else image.convert("PA")


def _grey16(mode: str) -> Image.Image:
    values = np.full((6, 6), GREY << 8, np.uint16)
    if mode == "I":
        return Image.fromarray(values.astype(np.int32), mode="I")
    dtype = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
    return Image.frombytes(mode, (6, 6), values.astype(dtype).tobytes())


# mode -> (the image in that mode, the RGB it must decode to, tolerance per channel)
CASES = {
    "1": (lambda: _rgb((255, 255, 255)).convert("1"), (255, 255, 255), 0),
    "L": (lambda: _rgb().convert("L"), (GREY,) * 3, 0),
    "LA": (lambda: _rgb().convert("LA"), (GREY,) * 3, 0),
    "La": (lambda: _rgb().convert("LA").convert("La"), (GREY,) * 3, 0),
    "P": (lambda: _palette("P"), COLOUR, 0),
    "PA": (lambda: _palette("PA"), COLOUR, 0),
    "RGB": (_rgb, COLOUR, 0),
    "RGBA": (lambda: _rgb().convert("RGBA"), COLOUR, 0),
    "RGBa": (lambda: _rgb().convert("RGBa"), COLOUR, 0),
    "RGBX": (lambda: _rgb().convert("RGBX"), COLOUR, 0),
    "CMYK": (lambda: _rgb().convert("CMYK"), COLOUR, 1),
    "YCbCr": (lambda: _rgb().convert("YCbCr"), COLOUR, 3),
    "HSV": (lambda: _rgb().convert("HSV"), COLOUR, 4),
    "LAB": (lambda: _rgb().convert("LAB"), COLOUR, 2),
    **{m: (lambda m=m: _grey16(m), (GREY,) * 3, 0) for m in ("I", "I;16", "I;16B", "I;16L", "I;16N")},
}
# Where a file keeps the mode: the format to write it in (the other modes are checked in memory).
FILE_FORMATS = {"1": "png", "L": "png", "LA": "png", "P": "png", "PA": "tif", "RGB": "png", "RGBA": "png",
                "CMYK": "tif", "YCbCr": "tif", "LAB": "tif", "I": "tif", "I;16": "png", "I;16B": "tif"}


def _assert_colour(decoded: np.ndarray, expected: tuple[int, ...], tolerance: int) -> None:
    assert decoded.dtype == np.uint8 and decoded.shape[-1] == 3
    error = np.abs(decoded.reshape(-1, 3).astype(int) - np.array(expected)).max()
    assert error <= tolerance, (decoded.reshape(-1, 3)[0].tolist(), expected)


def test_every_pillow_mode_is_decoded_or_refused_here() -> None:
    """A Pillow that adds a mode makes this fail until the mode is decoded (CASES) or refused (F)."""
    assert set(Image.MODES) <= set(CASES) | {"F"}
    assert set(CASES) == set(SUPPORTED_MODES)


@pytest.mark.parametrize("mode", sorted(CASES))
def test_in_memory_image_of_each_mode_becomes_its_rgb(mode: str) -> None:
    make, expected, tolerance = CASES[mode]
    image = make()
    assert image.mode == mode
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    _assert_colour(np.asarray(converted), expected, tolerance)


@pytest.mark.parametrize("mode", sorted(FILE_FORMATS))
def test_a_file_of_each_mode_decodes_to_its_rgb(tmp_path: Path, mode: str) -> None:
    make, expected, tolerance = CASES[mode]
    path = tmp_path / f"image.{FILE_FORMATS[mode]}"
    make().save(path)
    with Image.open(path) as written:
        assert written.mode == mode  # the file really holds this mode
    _assert_colour(read_image(path, 4), expected, tolerance)


def _srgb_of_lightness(lightness: float) -> float:
    """sRGB 0..255 of a neutral grey of CIE L* (a* = b* = 0): CIE 1976 inverse, then the sRGB transfer curve."""
    y = ((lightness + 16) / 116) ** 3 if lightness > 8 else lightness / 903.3
    v = 1.055 * y ** (1 / 2.4) - 0.055 if y > 0.0031308 else 12.92 * y
    return 255 * v


@pytest.mark.parametrize("l_byte", [40, 137, 230])
def test_lab_tiff_of_a_neutral_grey_is_that_grey_not_blue(tmp_path: Path, l_byte: int) -> None:
    """A CIELab TIFF as the TIFF 6.0 spec stores it: L* 0..100 as 0..255, a* and b* signed bytes (0: neutral).
    Decoded to the grey CIE L* gives, computed here independently of Pillow/LittleCMS."""
    path = tmp_path / "grey.tif"
    Image.frombytes("LAB", (4, 4), bytes([l_byte, 0, 0]) * 16).save(path)  # raw bytes, as a file holds them
    assert path.read_bytes().count(bytes([l_byte, 0, 0]) * 16) == 1
    decoded = read_image(path, 4).reshape(-1, 3).astype(int)
    expected = _srgb_of_lightness(l_byte * 100 / 255)
    assert np.abs(decoded - expected).max() <= 2, (decoded[0].tolist(), expected)
    assert np.ptp(decoded[0]) <= 1  # neutral: no channel dominates (the bug: mid grey came out blue)


def test_lab_tiff_of_mid_grey_from_rgb(tmp_path: Path) -> None:
    path = tmp_path / "mid_grey.tif"
    _rgb((128, 128, 128)).convert("LAB").save(path)
    _assert_colour(read_image(path, 4), (128, 128, 128), 1)


def test_lab_without_littlecms_is_refused_naming_file_and_mode(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lab.tif"
    _rgb().convert("LAB").save(path)
    import PIL

    # The import fails, as in a Pillow built without LittleCMS (its ImageCms raises ImportError on _imagingcms).
    monkeypatch.setitem(sys.modules, "PIL.ImageCms", None)
    monkeypatch.delattr(PIL, "ImageCms", raising=False)
    with pytest.raises(DatasetError, match=r"lab.tif: image mode 'LAB' \(CIE L\*a\*b\*\) needs Pillow's ImageCms") as e:
        read_image(path, 4)
    assert "\n" not in str(e.value)


def test_float_and_unknown_modes_are_refused_naming_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.new("F", (4, 4), 0.5).save(path)
    with pytest.raises(DatasetError, match=r"float.tif: floating-point pixels \(mode F\)"):
        read_image(path, 4)
    for mode in ("BGR;24", "I;16S", "XYZ"):  # not decoded here (BGR;* is Pillow < 12's; no file opens as the others)
        with pytest.raises(ValueError, match=rf"image mode '{mode}' has no conversion to RGB"):
            to_rgb(SimpleNamespace(mode=mode, info={}))


def test_palette_with_alpha_entries_is_composited_over_white() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([10, 20, 30, 0, *COLOUR, 255], "RGBA")  # entry 0 fully transparent
    image.putpixel((1, 0), 1)
    decoded = np.asarray(to_rgb(image))
    assert decoded[0, 0].tolist() == [255, 255, 255] and decoded[0, 1].tolist() == list(COLOUR)


def test_premultiplied_alpha_is_unpremultiplied_then_composited() -> None:
    half = Image.new("RGBA", (1, 1), (*COLOUR, 128))
    expected = np.asarray(to_rgb(half)).astype(int)  # straight alpha over white
    assert np.abs(np.asarray(to_rgb(half.convert("RGBa"))).astype(int) - expected).max() <= 1
    grey = Image.new("LA", (1, 1), (GREY, 128))
    assert np.abs(np.asarray(to_rgb(grey.convert("La"))).astype(int) - np.asarray(to_rgb(grey)).astype(int)).max() <= 1
