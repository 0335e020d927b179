"""The openai and anthropic backends: the official SDKs, images encoded as upstream, retries, bounded concurrency.

- Keys from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY); `--url` (or the SDKs' OPENAI_BASE_URL /
  ANTHROPIC_BASE_URL) points them at another endpoint, e.g. a vLLM server.
- Images as upstream (eval-spec section 5): OpenAI gets the text first, then one full-resolution PNG base64 data
  URL per image (no resize, no `detail`); Anthropic gets the images first, as JPEG base64 under 5 MiB (quality
  85, -10 down to 35, then x0.85 per side down to a 256 px edge; an image that cannot fit is dropped and noted),
  then the text.
- `temperature` 0 is sent explicitly (upstream sends none: provider default sampling), `max_tokens` 2048.
- Retries: the SDKs' own (`max_retries`, exponential backoff with jitter, honouring `retry-after` on 429 and
  retrying 408/409/429/5xx and connection errors). What still fails is recorded as that sample's error and
  not scored (upstream scores it wrong without retrying).
- Concurrency: at most `--concurrency` requests in flight (a thread pool; the SDK clients are thread-safe).
"""

from __future__ import annotations

import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from nemo_spatial.errors import UserError
from nemo_spatial.eval.backends.base import BackendOptions, Generated
from nemo_spatial.eval.prompts import Prompt

ANTHROPIC_MAX_BASE64 = 5 * 1024 * 1024


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def jpeg_base64_under(image: Image.Image, limit: int = ANTHROPIC_MAX_BASE64) -> str | None:
    """Upstream's `_pil_to_base64_with_limit`: lower the quality, then shrink; None when it cannot fit."""
    image, quality = image.convert("RGB"), 85
    while True:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
        encoded = base64.b64encode(buffer.getvalue())
        if len(encoded) <= limit:
            return encoded.decode()
        if quality > 35:
            quality = max(35, quality - 10)
            continue
        size = (max(256, int(image.width * 0.85)), max(256, int(image.height * 0.85)))
        if size == image.size:
            return None
        image, quality = image.resize(size, Image.Resampling.LANCZOS), 85


def _key(variable: str, required: bool) -> str:
    value = os.environ.get(variable)
    if value:
        return value
    if required:
        raise UserError(f"{variable} is not set; export your API key as {variable} (or pass --url for a local server)")
    return "EMPTY"  # a local OpenAI-compatible server (vllm serve) needs none


class _ApiBackend:
    name = "api"

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.settings: dict[str, Any] = {
            "backend": self.name,
            "model": options.model,
            "temperature": 0.0,
            "max_tokens": options.max_new_tokens,
            "max_retries": options.max_retries,
            "concurrency": options.concurrency,
        }

    def generate(self, prompts: list[Prompt]) -> list[Generated]:
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            return list(pool.map(self._timed, prompts))

    def _timed(self, prompt: Prompt) -> Generated:
        started = time.perf_counter()
        try:
            text, info = self._call(prompt)
        except Exception as error:  # noqa: BLE001 - the SDK's errors after its retries: this sample's error
            status = getattr(error, "status_code", None)
            detail = f" (HTTP {status})" if status else ""
            return Generated(None, f"{type(error).__name__}{detail}: {str(error)[:500]}", time.perf_counter() - started)
        return Generated(text, None, time.perf_counter() - started, info)

    def _call(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class OpenAIBackend(_ApiBackend):
    name = "openai"

    def __init__(
        self, options: BackendOptions, base_url: str | None = None, extra_body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(options)
        from openai import OpenAI

        url = base_url or options.url
        self.client = OpenAI(
            api_key=_key("OPENAI_API_KEY", required=url is None and not os.environ.get("OPENAI_BASE_URL")),
            base_url=url,
            max_retries=options.max_retries,
            timeout=options.request_timeout_s,
        )
        self.extra_body = extra_body
        self.settings.update(base_url=str(self.client.base_url), extra_body=extra_body)

    def _call(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt.text}]
        content += [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in prompt.images]
        response = self.client.chat.completions.create(
            model=self.options.model,
            messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
            max_tokens=self.options.max_new_tokens,
            temperature=0.0,
            extra_body=self.extra_body,
        )
        if not response.choices:
            raise RuntimeError("the response has no choices")
        choice = response.choices[0]
        return choice.message.content or "", {"finish": choice.finish_reason}


class AnthropicBackend(_ApiBackend):
    name = "anthropic"

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        import anthropic

        self.client = anthropic.Anthropic(
            api_key=_key("ANTHROPIC_API_KEY", required=options.url is None),
            base_url=options.url,
            max_retries=options.max_retries,
            timeout=options.request_timeout_s,
        )
        self.settings.update(base_url=str(self.client.base_url))

    def _call(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        content: list[dict[str, Any]] = []
        dropped = 0
        for image in prompt.images:
            data = jpeg_base64_under(image)
            if data is None:
                dropped += 1
                continue
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}})
        content.append({"type": "text", "text": prompt.text})
        response = self.client.messages.create(
            model=self.options.model,
            max_tokens=self.options.max_new_tokens,
            messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
            # anthropic 2.x's `create` has no `temperature` argument any more; the Messages API still takes
            # the field, so it goes into the request body explicitly.
            extra_body={"temperature": 0.0},
        )
        texts = [getattr(block, "text", "") for block in response.content if getattr(block, "type", "") == "text"]
        text = "\n".join(t.strip() for t in texts)
        return text.strip(), {"finish": response.stop_reason, "images_dropped": dropped}
