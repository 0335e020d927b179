"""A small real HTTP server speaking the generation server's protocol (/nemo/v1/...), for the router's tests.

It runs no model: each prompt's n rollouts carry `[server_id, sample_index]` as tokens (so a test sees which
server served which group) and the weight version this server holds; a weight sync checks that each bucket
file exists and records the version. Failure modes for the tests: `--crash-flag FILE` (if FILE exists on a
generate call, it is removed and the process exits: one crash, not again after a restart) and `--hang-flag
FILE` (if FILE exists on a generate call, the server stops answering anything, health included).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATE: dict[str, Any] = {
    "version": 0, "syncs": 0, "generate_calls": 0, "hung": False, "syncing": None, "sleeping": False
}  # fmt: skip
LOCK = threading.Lock()


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:
            print(f"fake server {args.server_id}: " + format % values, flush=True)

        def _reply(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _hang_if_hung(self) -> None:
            while STATE["hung"]:
                time.sleep(1.0)

        def do_GET(self) -> None:
            self._hang_if_hung()
            if self.path != "/nemo/v1/health":
                self._reply({"error": "not found"}, 404)
                return
            self._reply(
                {
                    "ok": True,
                    "weight_version": STATE["version"],
                    "weights_consistent": STATE["syncing"] is None,
                    "syncing_version": STATE["syncing"],
                    "model": "fake",
                    "max_model_len": 8192,
                    "dtype": "bfloat16",
                    "world_size": 1,
                    "syncs": STATE["syncs"],
                    "generate_calls": STATE["generate_calls"],
                    "sleeping": STATE["sleeping"],
                }
            )

        def do_POST(self) -> None:
            self._hang_if_hung()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
            route = self.path.removeprefix("/nemo/v1/")
            if route == "generate":
                self._generate(body)
            elif route == "weights/start":
                STATE["syncing"] = body["version"]
                self._reply({"ok": True})
            elif route == "weights/update":
                path = body["update_info"]["path"]
                self._reply({"ok": True} if os.path.exists(path) else {"error": f"no bucket {path}"})
            elif route in ("sleep", "wake_up"):  # placement=colocated's phase calls; nothing to free here
                STATE["sleeping"] = route == "sleep"
                self._reply({"sleeping": STATE["sleeping"], "seconds": 0.0})
            elif route == "weights/finish":
                with LOCK:
                    STATE["version"], STATE["syncing"] = body["version"], None
                    STATE["syncs"] += 1
                self._reply({"ok": True})
            else:
                self._reply({"error": f"unknown route {route}"}, 404)

        def _generate(self, body: dict[str, Any]) -> None:
            with LOCK:
                STATE["generate_calls"] += 1
            if args.crash_flag and os.path.exists(args.crash_flag):
                os.remove(args.crash_flag)
                print(f"fake server {args.server_id}: crashing as asked", flush=True)
                os._exit(3)
            if args.hang_flag and os.path.exists(args.hang_flag):
                STATE["hung"] = True
                self._hang_if_hung()
            n = body["sampling"]["n"]
            time.sleep(args.seconds_per_prompt * len(body["requests"]))
            version = STATE["version"]
            rollouts = [
                {
                    "prompt_id": request["prompt_id"],
                    "sample_index": i,
                    "token_ids": [args.server_id, i],
                    "log_probs": [-0.5, -0.5],
                    "weight_version": version,
                    "finish_reason": "stop",
                }
                for request in body["requests"]
                for i in range(n)
            ]
            self._reply({"weight_version": version, "num_errors": 0, "rollouts": rollouts})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-id", type=int, required=True)
    parser.add_argument("--seconds-per-prompt", type=float, default=0.05)
    parser.add_argument("--crash-flag", default="")
    parser.add_argument("--hang-flag", default="")
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args)).serve_forever()


if __name__ == "__main__":
    main()
