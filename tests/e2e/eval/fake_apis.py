"""Local HTTP servers on 127.0.0.1 speaking the OpenAI chat-completions and Anthropic messages wire formats.

Only for the paid APIs (the house rule allows a fake there). The reply is a function of the request's text
(stable across runs, so a resumed run can be compared with an uninterrupted one). Scripted failures: the
first requests can get a 429 with `retry-after` or a 500, in the providers' error bodies; a prompt holding
`ALWAYS-500` always fails. Every request is recorded (time, headers, body) and the peak concurrency kept.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeApi:
    def __init__(self, kind: str, delay_s: float = 0.0) -> None:
        self.kind = kind  # openai | anthropic
        self.delay_s = delay_s
        self.script: list[tuple[int, dict[str, str]]] = []  # (status, headers) for the next requests
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}" + ("/v1" if self.kind == "openai" else "")

    def __enter__(self) -> FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply_for(text: str) -> str:
    """A deterministic answer: option A or B, by a hash of the prompt."""
    letter = "AB"[hashlib.sha256(text.encode()).digest()[0] % 2]
    return f"<think>fake</think><answer>({letter})</answer>"


def _text_of(body: dict[str, Any]) -> str:
    parts = body["messages"][0]["content"]
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi

    def log_message(self, *args: object) -> None:
        return None

    def do_POST(self) -> None:
        api = self.api
        expected = "/v1/chat/completions" if api.kind == "openai" else "/v1/messages"
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with api.lock:
            api.requests.append(
                {
                    "t": time.monotonic(),
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )
            api.in_flight += 1
            api.peak = max(api.peak, api.in_flight)
            scripted = api.script.pop(0) if api.script else None
        try:
            time.sleep(api.delay_s)
            if self.path != expected:
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if "ALWAYS-500" in _text_of(body):
                scripted = (500, {})
            if scripted is not None:
                status, headers = scripted
                return self._send(status, self._error(status), headers)
            return self._send(200, self._ok(body))
        finally:
            with api.lock:
                api.in_flight -= 1

    def _error(self, status: int) -> dict[str, Any]:
        kind = "rate_limit_error" if status == 429 else "api_error"
        if self.api.kind == "openai":
            return {"error": {"message": f"fake {status}", "type": kind, "param": None, "code": None}}
        return {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}

    def _ok(self, body: dict[str, Any]) -> dict[str, Any]:
        text = reply_for(_text_of(body))
        if self.api.kind == "openai":
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}  # fmt: skip
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 5}}  # fmt: skip

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
