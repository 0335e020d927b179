"""Image decoding and SpatialThinker's resizing, before the Qwen2.5-VL processor sees the image.

What it computes (upstream `ImageProcessMixin.process_image`): decode; if W*H > max_pixels scale both sides by
sqrt(max_pixels / (W*H)); then if W*H < min_pixels scale by sqrt(min_pixels / (W*H)); new sides are truncated
to integers, so the aspect ratio is kept to within a pixel; PIL's default resampling (bicubic); convert to RGB.
The processor then rounds each side to a multiple of 28 (`smart_resize`).

Departures, each one where upstream would crash or pass bad input on:
- A side that truncates to 0 (e.g. 1 x 5,000,000 pixels) is kept at 1 pixel.
- An aspect ratio above 200 (Qwen's `smart_resize` raises on it) is an `ImageError` naming the size, so the
  sample is skipped and counted rather than the worker dying.
- Undecodable bytes, decompression bombs and empty values are `ImageError`s too.
EXIF orientation is ignored, as upstream (the ground-truth boxes are in the stored pixel frame).
"""

from __future__ import annotations

import io
import math
from typing import Any

from PIL import Image

MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize rejects anything more elongated


class ImageError(ValueError):
    """One image that cannot be used; the message says why (the sample is skipped and counted)."""


def decode_image(value: Any) -> Image.Image:
    """A PIL image from what a parquet/`datasets` column holds: {"bytes", "path"}, bytes, a path, or a PIL image."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ImageError(f"a row holds {len(value)} images; only single-image prompts are supported")
        value = value[0]
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        value = data if data else path
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not value:
            raise ImageError("the image bytes are empty")
        return _open(io.BytesIO(bytes(value)), "bytes")
    if isinstance(value, str) and value:
        return _open(value, value)
    raise ImageError(f"no image in a value of type {type(value).__name__}")


def _open(source: Any, what: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot decode the image ({what if isinstance(source, str) else 'bytes'}): {error}") from None
    return image


def scaled_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The (width, height) upstream's resizing gives for an image of this size."""
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * factor)), max(1, int(height * factor))
    if width * height < min_pixels:
        factor = math.sqrt(min_pixels / (width * height))
        width, height = max(1, int(width * factor)), max(1, int(height * factor))
    return width, height


def prepare_image(value: Any, min_pixels: int, max_pixels: int) -> Image.Image:
    """Decode, check, resize as upstream and convert to RGB; raises ImageError for an unusable image."""
    image = decode_image(value)
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"the image is empty ({width} x {height})")
    new_size = scaled_size(width, height, min_pixels, max_pixels)
    for w, h in ((width, height), new_size):  # integer truncation can push a borderline ratio over the limit
        if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
            raise ImageError(
                f"the image is {width} x {height} (resized {new_size[0]} x {new_size[1]}): aspect ratio above "
                f"{MAX_ASPECT_RATIO}, which Qwen2.5-VL cannot take"
            )
    if new_size != (width, height):
        image = image.resize(new_size)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image
