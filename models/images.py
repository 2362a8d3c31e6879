"""Decoding untrusted image bytes into RGB PIL images, safely.

Everything that reaches an encoder goes through :func:`decode_image` (bytes from
an upload), :func:`decode_base64_image` (JSON bodies) or :func:`load_image`
(dataset files). They either return a fully decoded RGB image with its EXIF
orientation applied, or raise :class:`InvalidImageError` (a ``ValueError``)
whose message says what is wrong; :class:`ImageTooLargeError` marks inputs
refused for their pixel count (decompression bombs included) before their
pixels are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from models.types import CatalogRecord

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
# Encoders scale an image's short side to their input size and centre-crop a square,
# so the ends of a long side are thrown away. Cropping them off before the resize
# keeps its cost bounded: a 65535x1 GIF would otherwise be resized to 16.7 M x 256
# pixels (gigabytes of memory) for a 224x224 crop.
MAX_ASPECT_RATIO = 4.0

_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


class InvalidImageError(ValueError):
    """The input is not a decodable image."""


class ImageTooLargeError(InvalidImageError):
    """The image declares more pixels than allowed (e.g. a decompression bomb)."""


def _pixel_limit(max_pixels: int) -> int:
    # PIL warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; we
    # treat its warning threshold as a hard limit too (without touching the
    # process-wide warning filters, which are not thread-safe).
    pil_limit = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pil_limit) if pil_limit else max_pixels


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy; transparent areas are composited onto white, not black."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _decode(fp: IO[bytes], what: str, max_pixels: int) -> Image.Image:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    limit = _pixel_limit(max_pixels)
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{what} is too large (decompression bomb refused): {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"{what} is not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"{what} could not be read as an image: {exc}") from exc
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidImageError(f"{what} declares an empty size {width}x{height}")
        if width * height > limit:
            raise ImageTooLargeError(
                f"{what} declares {width}x{height} = {width * height:,} pixels, "
                f"more than the allowed {limit:,}"
            )
        try:
            img.load()  # force full decoding: truncated or corrupt data fails here
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{what} is too large to decode: {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            raise InvalidImageError(
                f"{what} is truncated or corrupt ({img.format or 'unknown'} data): {exc}"
            ) from exc
        try:
            oriented = ImageOps.exif_transpose(img)  # always a new image
        except Exception:  # noqa: BLE001 - broken EXIF must not reject a decodable image
            oriented = None
        if oriented is None or oriented is img:
            oriented = img.copy()  # detach from ``img``, which is closed below
        return _to_rgb(oriented)
    finally:
        img.close()


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to a loaded RGB image with EXIF orientation applied.

    Raises :class:`InvalidImageError` for empty, non-image, truncated or corrupt
    data, and :class:`ImageTooLargeError` when the declared size exceeds
    ``max_pixels`` (checked from the header, before pixels are decoded).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImageError("image data is empty (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), "image data", max_pixels)


def decode_base64_image(value: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode raw base64 or a ``data:image/...;base64,`` URI into an RGB image."""
    return _decode(io.BytesIO(base64_image_bytes(value)), "base64 image", max_pixels)


def base64_image_bytes(value: str) -> bytes:
    """The bytes of raw base64 or a ``data:image/...;base64,`` URI, not yet decoded as
    an image; InvalidImageError for a malformed URI, bad base64 or no bytes."""
    if not isinstance(value, str):
        raise InvalidImageError(f"base64 image must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidImageError("base64 image string is empty")
    match = _DATA_URI.match(text)
    if match:
        mime = match.group("mime").strip().lower()
        params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
        if mime and not mime.startswith("image/"):
            raise InvalidImageError(f"data URI has media type {mime!r}, expected image/*")
        if "base64" not in params:
            raise InvalidImageError("data URI is not base64-encoded (missing ';base64')")
        text = match.group("data")
    elif text.startswith("data:"):
        raise InvalidImageError("malformed data URI (expected 'data:image/...;base64,<data>')")
    # Tolerate whitespace/newlines (MIME-style wrapping) and URL-safe alphabets.
    text = re.sub(r"\s+", "", text)
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"image is not valid base64: {exc}") from exc
    if not data:
        raise InvalidImageError("base64 image decodes to 0 bytes")
    return data


def load_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load a dataset image file; same checks as :func:`decode_image`."""
    path = Path(path)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise InvalidImageError(f"image file not found: {path}") from exc
    except OSError as exc:
        raise InvalidImageError(f"image file {path} could not be opened: {exc}") from exc
    with fp:
        if path.stat().st_size == 0:
            raise InvalidImageError(f"image file {path} is empty (0 bytes)")
        return _decode(fp, f"image file {path}", max_pixels)


def crop_to_aspect_ratio(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """``image`` with its long side centre-cropped to at most ``max_ratio`` x its short side.

    A square centre crop of the resized image (every encoder's eval transform) sees
    the same pixels either way; only the discarded ends are cut early.
    """
    if max_ratio < 1:
        raise ValueError(f"max_ratio must be at least 1, got {max_ratio}")
    width, height = image.size
    longest = max(1, math.ceil(min(width, height) * max_ratio))
    if width > longest:
        left = (width - longest) // 2
        return image.crop((left, 0, left + longest, height))
    if height > longest:
        top = (height - longest) // 2
        return image.crop((0, top, width, top + longest))
    return image


def load_record_images(
    records: Sequence[CatalogRecord], start: int, size: int
) -> tuple[list[int], list[Image.Image]]:
    """The readable images of ``records[start:start + size]`` and their positions.

    Records without an image are passed over; an unreadable image is logged and
    passed over too, so one bad file does not stop a whole dataset.
    """
    idx, images = [], []
    for i in range(start, min(len(records), start + size)):
        path = records[i].image_path
        if path is None:
            continue
        try:
            images.append(load_image(path))
            idx.append(i)
        except InvalidImageError as exc:
            log.warning("skipping image of %s: %s", records[i].id, exc)
    return idx, images
