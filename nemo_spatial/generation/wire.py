"""JSON forms of generation requests, sampling settings and rollouts (the server's HTTP protocol).

Images travel as base64 PNG (lossless, so the server sees exactly the trainer's pixels). Decoding never
raises on one bad item: it returns the error text for that prompt, so the batch goes on and the prompt
comes back as error rollouts.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import asdict, fields
from typing import Any

from PIL import Image, UnidentifiedImageError

from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.config import SamplingConfig
from nemo_spatial.generation.types import GenerationRequest, Rollout

MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def encode_image(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: str) -> Image.Image:
    """A PIL RGB image from base64 PNG/JPEG; ValueError naming the problem otherwise."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as error:
        raise ValueError(f"image is not valid base64 ({error})") from None
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {image.width}x{image.height} pixels exceeds {MAX_IMAGE_PIXELS} pixels")
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image bytes are not a readable image ({error})") from None
    return image.convert("RGB")


def encode_request(request: GenerationRequest) -> dict[str, Any]:
    return {
        "prompt_id": request.prompt_id,
        "prompt": request.prompt,
        "prompt_token_ids": request.prompt_token_ids,
        "images": [encode_image(image) for image in request.images],
    }


def decode_request(item: Any, index: int) -> tuple[GenerationRequest | None, str, str | None]:
    """(request, prompt_id, error): the request, or None and the reason it cannot run."""
    if not isinstance(item, dict):
        return None, f"#{index}", f"request #{index} must be a JSON object, got {type(item).__name__}"
    prompt_id = str(item.get("prompt_id", f"#{index}"))
    images_data = item.get("images") or []
    if not isinstance(images_data, list):
        return None, prompt_id, f"request {prompt_id!r}: images must be a list of base64 strings"
    images = []
    for position, data in enumerate(images_data):
        if not isinstance(data, str):
            return None, prompt_id, f"request {prompt_id!r}: image {position} must be a base64 string"
        try:
            images.append(decode_image(data))
        except ValueError as error:
            return None, prompt_id, f"request {prompt_id!r}: image {position}: {error}"
    token_ids = item.get("prompt_token_ids")
    if token_ids is not None and not (isinstance(token_ids, list) and all(isinstance(t, int) for t in token_ids)):
        return None, prompt_id, f"request {prompt_id!r}: prompt_token_ids must be a list of integers"
    try:
        request = GenerationRequest(prompt_id, item.get("prompt"), token_ids, images)
    except ValueError as error:
        return None, prompt_id, str(error)
    return request, prompt_id, None


def encode_sampling(params: SamplingConfig) -> dict[str, Any]:
    return asdict(params)


def decode_sampling(data: Any) -> SamplingConfig:
    """A SamplingConfig from JSON; ConfigError naming an unknown key or a bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"sampling must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(SamplingConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown sampling key(s) {unknown}; valid keys: {sorted(known)}")
    try:
        return SamplingConfig(**data)
    except TypeError as error:
        raise ConfigError(f"sampling: {error}") from None


def encode_rollout(rollout: Rollout) -> dict[str, Any]:
    return asdict(rollout)


def decode_rollout(data: dict[str, Any]) -> Rollout:
    return Rollout(**data)
