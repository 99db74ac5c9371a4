"""imagedata.decode: every pixel format a user's folder may hold decodes to the right 8-bit RGB, EXIF orientation is
applied, and an image past the pixel limit is refused from its header, before anything is decoded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError, FolderImages, load_dataset
from edge_encoder.imagedata.decode import (
    DEFAULT_MAX_IMAGE_PIXELS,
    header_readable,
    read_image,
    to_rgb,
)
from PIL import Image, ImageFile, ImageOps


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG file built by hand (Pillow writes no 16-bit grey+alpha or RGBA), ``rows`` unfiltered scanlines."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _png16(path: Path, pixels: np.ndarray, color_type: int) -> Path:
    """Write ``uint16 (H, W, C)`` pixels as a 16-bit PNG of ``color_type`` (0 grey, 4 grey+alpha, 2 RGB, 6 RGBA)."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(_png(width, height, 16, color_type, rows))
    return path


def test_16_bit_grey_png_keeps_its_grey_level(tmp_path: Path) -> None:
    """``convert("RGB")`` clips 16-bit values at 255 (solid white); the high byte is the 8-bit value."""
    values = np.array([[0, 0x4000], [0x8080, 0xFFFF]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    decoded = read_image(path, 2)
    np.testing.assert_array_equal(decoded[..., 0], values >> 8)
    assert (decoded == decoded[..., :1]).all()  # grey in every channel


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_every_16_bit_grey_mode_scales_alike(mode: str) -> None:
    values = np.array([[0, 300], [0x4000, 0xFFFF]], dtype=np.uint16)
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32), mode="I")
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(image))[..., 1], values >> 8)


def test_16_bit_pgm_opens_as_mode_i_and_decodes(tmp_path: Path) -> None:
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 2 1 65535\n" + np.array([0x1000, 0xF000], ">u2").tobytes())
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_image(path, 1).shape, (1, 1, 3))
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.open(path)))[0, :, 0], [0x10, 0xF0])


def test_16_bit_grey_alpha_and_rgba_are_composited_over_white(tmp_path: Path) -> None:
    opaque, clear = 0xFFFF, 0
    grey_alpha = np.array([[[0x4000, opaque], [0x4000, clear]]], dtype=np.uint16)  # (1, 2, 2)
    decoded = np.asarray(to_rgb(Image.open(_png16(tmp_path / "la16.png", grey_alpha, 4))))
    np.testing.assert_array_equal(decoded[0, 0], [0x40] * 3)
    np.testing.assert_array_equal(decoded[0, 1], [255] * 3)  # a transparent pixel shows the background
    rgba = np.array([[[0x8000, 0x2000, 0x1000, opaque], [0, 0, 0, clear]]], dtype=np.uint16)
    decoded = np.asarray(to_rgb(Image.open(_png16(tmp_path / "rgba16.png", rgba, 6))))
    np.testing.assert_array_equal(decoded[0, 0], [0x80, 0x20, 0x10])
    np.testing.assert_array_equal(decoded[0, 1], [255] * 3)
    rgb = np.array([[[0x8000, 0x2000, 0x1000]]], dtype=np.uint16)
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.open(_png16(tmp_path / "rgb16.png", rgb, 2))))[0, 0],
                                  [0x80, 0x20, 0x10])


def test_palette_with_a_transparent_index_shows_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    decoded = np.asarray(to_rgb(Image.open(path)))
    np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [200, 100, 50]])


def test_cmyk_jpeg_decodes_to_its_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (200, 50, 100)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    assert np.abs(read_image(path, 8).astype(int) - rgb[:8, :8]).max() <= 3


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A sideways-stored photo (orientation 6: rotate 90 degrees clockwise to view) is decoded upright."""
    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4] = 255  # left half white as stored: after the rotation the top half is white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    upright = np.asarray(to_rgb(ImageOps.exif_transpose(Image.open(path))))
    assert upright.shape == (8, 4, 3) and upright[:4].min() == 255 and upright[4:].max() == 0
    square = read_image(path, 4)  # the fit crops the middle 4x4 of the upright 8x4 image
    assert square[0].min() == 255 and square[-1].max() == 0


def _bomb(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A PNG whose header claims ``width x height`` 8-bit grey pixels; the data is a few bytes (never decoded)."""
    path.write_bytes(_png(width, height, 8, 0, b"\x00" * 64))
    return path


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    decoded: list[Path] = []  # refused from the header: PIL never decodes the pixels (0.4 GB at 3 bytes a pixel)
    real_load = ImageFile.ImageFile.load

    def spy_load(self: ImageFile.ImageFile):  # noqa: ANN202 - PIL's own signature
        decoded.append(Path(str(self.filename)))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    with pytest.raises(DatasetError, match=r"bomb.png is 12000x12000 \(144.0 Mpx\), above the limit of 50,000,000 "
                                           r"pixels \(config key 'data.max_image_pixels'"):
        read_image(bomb, 16)
    assert decoded == []
    small = tmp_path / "small.png"  # the spy does see a decode: an image within the limit is loaded
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(small)
    assert read_image(small, 4).shape == (4, 4, 3) and decoded and decoded[0] == small
    assert not header_readable(bomb) and header_readable(bomb, max_pixels=200_000_000)
    assert DEFAULT_MAX_IMAGE_PIXELS == 50_000_000


def test_the_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    path = tmp_path / "ten.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(path)
    assert read_image(path, 4, max_pixels=100).shape == (4, 4, 3)
    with pytest.raises(DatasetError, match="ten.png is 10x10"):
        read_image(path, 4, max_pixels=99)


def test_float_images_are_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    with pytest.raises(DatasetError, match=r"float.tif: floating-point pixels \(mode F\)"):
        read_image(path, 4)


def test_folder_runs_refuse_or_skip_a_bomb(tmp_path: Path, write_png_tree) -> None:
    root = write_png_tree(tmp_path / "tree", classes=2, per_class=6)
    bomb = _bomb(root / "class_0" / "zz_bomb.png")
    with pytest.raises(DatasetError, match="zz_bomb.png is 12000x12000"):
        load_dataset(f"folder:{root}", image_size=8)
    splits = load_dataset(f"folder:{root}", image_size=8, skip_corrupt=True)
    assert splits.skipped_files == (str(bomb),)
    images = FolderImages.open(root, "train", image_size=8, skip_corrupt=True, test_fraction=0.2)
    assert str(bomb) in images.skipped_files
    streamed = FolderImages([bomb], [0], 8, ["a"], max_pixels=1000)
    with pytest.raises(DatasetError, match="zz_bomb.png is 12000x12000"):
        streamed[0]


def test_the_limit_is_the_config_key_data_max_image_pixels(tmp_path: Path, write_png_tree) -> None:
    from edge_encoder.imagedata import open_run_data
    from edge_encoder.imagedata.config import data_settings_from_dict

    root = write_png_tree(tmp_path / "tree", classes=2, per_class=4, size=(16, 16))  # 256 px each
    for stream in (False, True):
        settings = data_settings_from_dict({"dataset": f"folder:{root}", "image_size": 8, "stream": stream,
                                            "max_image_pixels": 255, "skip_corrupt": stream})
        if not stream:
            with pytest.raises(DatasetError, match=r"is 16x16 \(0.0 Mpx\), above the limit of 255 pixels"):
                open_run_data(settings)
        else:  # listed with skip_corrupt: every file's header is over the limit, so nothing is left
            with pytest.raises(DatasetError, match="no readable images"):
                open_run_data(settings)
    allowed = data_settings_from_dict({"dataset": f"folder:{root}", "image_size": 8, "max_image_pixels": 256})
    assert open_run_data(allowed).train_images.shape[1:] == (8, 8, 3)
