"""A real `python -m nemo_spatial.reward.serve` process on 127.0.0.1, for the service's tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import urllib3

from nemo_spatial.net import free_port
from nemo_spatial.reward import RewardSample
from nemo_spatial.reward.examples import BEHIND, BIKE, GROUND_TRUTH, MAN, PROBLEM, response

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """Starts the server with `overrides`, waits until /v2/health/ready, stops it on `stop()`."""

    def __init__(
        self,
        log_path: Path,
        *overrides: str,
        env: dict[str, str] | None = None,
        workers: int = 2,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.host = host
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "nemo_spatial.reward.serve",
            "--host",
            host,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "reward.similarity=trigram",
            *overrides,
        ]
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        self.http = urllib3.HTTPConnectionPool(host, self.port, retries=False, timeout=60, maxsize=4)
        self._wait_ready(timeout_s=180)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.http.request("GET", "/v2/health/ready", timeout=2).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def scoring_pids(self) -> list[int]:
        """The scoring processes: children of the forkserver that the server started."""
        forkservers = [c for c in psutil.Process(self.process.pid).children() if "forkserver" in " ".join(c.cmdline())]
        return [worker.pid for server in forkservers for worker in server.children()]

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/v2/models/reward_model/infer"):
        return self.http.urlopen("POST", path, body=body, headers=headers or {})

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        return self.process.returncode


def realistic_samples(n: int, seed: int = 0) -> list[RewardSample]:
    """Responses around the reward spec's worked example: jittered boxes, extra objects, wrong answers, breakage."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        objects = [_jitter(BIKE, rng), _jitter(MAN, rng)][: rng.choice([1, 2, 2, 2])]
        if rng.random() < 0.3:
            objects.append({"id": f"tree.{rng.randint(1, 3)}", "bbox": [400, 0, 640, rng.randint(200, 400)]})
        scene = {"objects": objects, "relationships": [BEHIND] if rng.random() < 0.7 else []}
        answer = rng.choice(["(A) behind", "(a) BEHIND", "(B) in front of", "A"])
        text = response(scene, answer, order=tuple(rng.sample(["observe", "scene", "think", "answer"], 4)))
        roll = rng.random()
        if roll < 0.1:
            text = text.replace("<observe>", "")
        elif roll < 0.15:
            text = text.replace("}]", "]")  # broken JSON
        samples.append(RewardSample(text, GROUND_TRUTH, PROBLEM))
    return samples


def _jitter(obj: dict, rng: random.Random) -> dict:
    return {"id": obj["id"], "bbox": [v + rng.randint(-25, 25) for v in obj["bbox"]]}


def json_infer_body(n: int = 2, **changes: object) -> bytes:
    """A valid JSON infer request of n worked-example samples; `changes` replace or drop (None) inputs."""
    columns = {"sentences": response(), "ground_truth": GROUND_TRUTH, "problem": PROBLEM}
    inputs = {
        name: {"name": name, "datatype": "BYTES", "shape": [n, 1], "data": [value] * n}
        for name, value in columns.items()
    }
    for name, value in changes.items():
        if value is None:
            inputs.pop(name)
        else:
            inputs[name] = value  # type: ignore[assignment]
    return json.dumps({"inputs": list(inputs.values())}).encode()
