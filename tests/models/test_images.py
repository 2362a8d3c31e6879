"""models.images: every class of bad input is refused with a clear error."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from models.images import (
    ImageTooLargeError,
    InvalidImageError,
    crop_to_aspect_ratio,
    decode_base64_image,
    decode_image,
    load_image,
)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    img = Image.new("RGB", size)
    img.putdata(
        [
            ((x * 4) % 256, (y * 5) % 256, (x * y) % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    return img


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims ``width`` x ``height`` pixels."""
    png = _encode(Image.new("L", (1, 1)), "PNG")
    ihdr_data = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr_data
    patched = struct.pack(">I", len(ihdr_data)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    # signature (8) + IHDR chunk (4 len + 4 type + 13 data + 4 crc = 25)
    return png[:8] + patched + png[33:]


def test_decodes_jpeg_png_to_rgb() -> None:
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        img = decode_image(_encode(_photo(), fmt))
        assert img.mode == "RGB" and img.size == (64, 48), fmt


def test_grayscale_and_alpha_become_rgb_on_white() -> None:
    assert decode_image(_encode(Image.new("L", (8, 8), 7), "PNG")).getpixel((0, 0)) == (7, 7, 7)
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(_encode(transparent, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _encode(_photo((64, 48)), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (48, 64)


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


def test_garbage_bytes() -> None:
    with pytest.raises(InvalidImageError, match="not a recognised image"):
        decode_image(b"this is certainly not an image" * 10)


def test_not_bytes() -> None:
    with pytest.raises(InvalidImageError, match="bytes"):
        decode_image("hello")  # type: ignore[arg-type]


def test_truncated_jpeg() -> None:
    data = _encode(_photo((256, 256)), "JPEG", quality=95)
    with pytest.raises(InvalidImageError, match="truncated or corrupt") as info:
        decode_image(data[: len(data) // 2])
    assert not isinstance(info.value, ImageTooLargeError)


def test_truncated_png() -> None:
    data = _encode(_photo((128, 128)), "PNG")
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 2])


def test_bomb_header_refused_before_decoding() -> None:
    data = _png_declaring(8_000, 8_000)  # 64 Mpx claimed, ~70 bytes on disk
    assert len(data) < 100
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        decode_image(data)


def test_huge_bomb_refused() -> None:
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(_png_declaring(20_000, 20_000))  # 400 Mpx


def test_pil_warning_threshold_is_a_hard_limit() -> None:
    # Between MAX_IMAGE_PIXELS and twice that PIL only warns; we refuse.
    side = int(Image.MAX_IMAGE_PIXELS**0.5) + 100
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageTooLargeError):
        decode_image(_png_declaring(side, side), max_pixels=10**12)


def test_pil_decompression_bomb_limit_also_refused() -> None:
    # Above PIL's own hard limit (2 x MAX_IMAGE_PIXELS) PIL raises during open().
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    with pytest.raises(ImageTooLargeError):
        decode_image(_png_declaring(side, side), max_pixels=10**12)


def test_max_pixels_is_configurable() -> None:
    data = _encode(_photo((64, 48)), "PNG")
    with pytest.raises(ImageTooLargeError, match="3,072 pixels"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=64 * 48).size == (64, 48)
    with pytest.raises(ValueError):
        decode_image(data, max_pixels=0)


def test_too_large_is_an_invalid_image_and_a_value_error() -> None:
    assert issubclass(ImageTooLargeError, InvalidImageError)
    assert issubclass(InvalidImageError, ValueError)


def test_base64_raw_and_data_uri() -> None:
    raw = base64.b64encode(_encode(_photo(), "PNG")).decode()
    assert decode_base64_image(raw).size == (64, 48)
    assert decode_base64_image(f"data:image/png;base64,{raw}").size == (64, 48)
    wrapped = "\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))
    assert decode_base64_image(wrapped).size == (64, 48)
    urlsafe = base64.urlsafe_b64encode(_encode(_photo(), "PNG")).decode().rstrip("=")
    assert decode_base64_image(urlsafe).size == (64, 48)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("!!!not*base64$$$", "not valid base64"),
        ("data:text/plain;base64,aGVsbG8=", "media type"),
        ("data:image/png,rawdata", "not base64-encoded"),
        ("data:nonsense", "malformed data URI"),
        (base64.b64encode(b"hello world, no image here").decode(), "not a recognised image"),
    ],
)
def test_base64_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        decode_base64_image(value)


def test_base64_bomb() -> None:
    value = "data:image/png;base64," + base64.b64encode(_png_declaring(20_000, 20_000)).decode()
    with pytest.raises(ImageTooLargeError):
        decode_base64_image(value)


def test_load_image(tmp_path: Path) -> None:
    good = tmp_path / "ok.jpg"
    good.write_bytes(_encode(_photo(), "JPEG"))
    assert load_image(good).size == (64, 48)
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(empty)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(20_000, 20_000))
    with pytest.raises(ImageTooLargeError, match=str(bomb)):
        load_image(bomb)


def test_loads_sample_photo(shared_data: Path) -> None:
    img = load_image(shared_data / "kfood" / "images" / "kfood-1.jpg")
    assert img.mode == "RGB" and max(img.size) <= 320


@pytest.mark.parametrize(
    ("size", "cropped"),
    [((8000, 1), (4, 1)), ((1, 65535), (1, 4)), ((400, 100), (400, 100)), ((90, 401), (90, 360))],
)
def test_crop_to_aspect_ratio_centres_the_long_side(
    size: tuple[int, int], cropped: tuple[int, int]
) -> None:
    image = _photo(size) if size[0] * size[1] < 100_000 else Image.new("RGB", size)
    out = crop_to_aspect_ratio(image, 4.0)

    assert out.size == cropped
    left, top = (size[0] - cropped[0]) // 2, (size[1] - cropped[1]) // 2
    assert out.getpixel((0, 0)) == image.getpixel((left, top))


def test_crop_to_aspect_ratio_refuses_a_ratio_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        crop_to_aspect_ratio(Image.new("RGB", (2, 2)), 0.5)
