"""Uploaded images checked by their content, not their name: format, size and dimensions.

Only raster formats every mail client shows (PNG, JPEG, GIF, WebP): SVG can
carry scripts and most clients do not show it. The file is decoded in full,
so a truncated or disguised file is refused before anything is stored.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from .storage import format_size

#: Pillow's format name -> the content type we store and serve.
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
#: Larger than any logo needs; keeps decoding cheap and refuses decompression bombs.
MAX_PIXELS = 4096 * 4096

_DATA_URI = re.compile(r"data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=]+)")


class ImageRefused(ValueError):
    """The upload is not an image we accept; the message says why, for the person uploading."""


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]

    @property
    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"


def _sniff(data: bytes) -> str | None:
    """The format named by the file's first bytes (its magic number), whatever its name says."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(data: bytes, *, max_bytes: int) -> CheckedImage:
    """The image with its type and size in pixels; ImageRefused with a clear reason otherwise."""
    if not data:
        raise ImageRefused("The file is empty.")
    if len(data) > max_bytes:
        raise ImageRefused(f"The image is larger than the limit of {format_size(max_bytes)}.")
    kind = _sniff(data)
    if kind is None:
        raise ImageRefused("The file is not a PNG, JPEG, GIF or WebP image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageRefused(
                        f"The image is {width} × {height} pixels; use one of at most "
                        f"{MAX_PIXELS:,} pixels in all (a logo needs far fewer)."
                    )
                image.load()  # decodes every pixel: a truncated or forged file fails here
    except ImageRefused:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
        raise ImageRefused(
            f"The file starts like a {kind} image but cannot be read as one."
        ) from None
    if width <= 0 or height <= 0:
        raise ImageRefused("The image has no pixels.")
    return CheckedImage(data, CONTENT_TYPES[kind], width, height)


def image_from_data_uri(value: str, *, max_bytes: int) -> CheckedImage:
    """An image carried in a form as a data: URI (a preview's upload), checked again in full."""
    match = _DATA_URI.fullmatch(value.strip())
    if match is None:
        raise ImageRefused("The previewed logo was lost; choose the file again.")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except ValueError:
        raise ImageRefused("The previewed logo was lost; choose the file again.") from None
    return check_image(data, max_bytes=max_bytes)
