"""Load benchmark of the remote reward service: rollout latency, responses/s, p50/p99, exactly-once answers.

    python benchmarks/reward_service_load.py [--workers 2] [--clients 4] [--batches 8] [--batch-size 512]
    python benchmarks/reward_service_load.py --url http://127.0.0.1:5555 --client tritonclient   # any v2 server

Without --url it starts `python -m nemo_spatial.reward.serve` on a free loopback port (trigram similarity) and
stops it at the end. It prints, in order:
  1. what bounds the service: the reward's own cost on one core in this process, and what the v2 bodies of a
     rollout cost to encode and decode (binary tensor data and JSON);
  2. rollout latency: the trainer's client (RemoteRewardClient) scoring 4,096 responses in batches of 512, up to
     --in-flight at once, --rollouts times (target < 0.5 s on the 2-core machine); with a server it started, the
     CPU seconds each process spent per rollout, which say what bounds it even when other work shares the cores;
  3. load: --clients threads, each with its own client, each sending --batches batches of --batch-size samples;
     responses/s, p50/p99 batch latency, and a check that every sample came back exactly once with the score
     computed in-process (float32-exact).
Responses are generated as in reward_throughput.py (realistic STVQA shapes, about 60% well formed). The clients
run on the same cores as the server, as a trainer on the same node would.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_throughput import make_case

from nemo_spatial.config import load_config
from nemo_spatial.reward import kserve
from nemo_spatial.reward.batch import RewardSample, RewardScorer
from nemo_spatial.reward.client import LocalRewardClient, RemoteRewardClient
from nemo_spatial.reward.config import RewardServiceConfig

REPO = Path(__file__).resolve().parent.parent
ROLLOUT = 4096
FIELDS = (("sentences", "response"), ("ground_truth", "ground_truth"), ("problem", "problem"))


def main() -> None:
    args = _parser().parse_args()
    rng = random.Random(args.seed)
    cases = [make_case(rng) for _ in range(max(ROLLOUT, args.clients * args.batches * args.batch_size))]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before starting")
    bounds(cases[:ROLLOUT], args.workers)
    expected = [result.overall for result in LocalRewardClient("spatialthinker", "trigram").score_batch(cases).results]
    process, url = (None, args.url) if args.url else start_server(args.workers)
    try:
        rollout_latency(url, cases[:ROLLOUT], expected[:ROLLOUT], args, process)
        load(url, cases, expected, args)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)


def bounds(cases: list[RewardSample], workers: int) -> None:
    scorer = RewardScorer("spatialthinker", "trigram")
    scorer.score_batch(cases[:200])
    one_core = _best(lambda: scorer.score_batch(cases), repeat=1)
    print(f"1. what bounds a rollout of {len(cases)} responses")
    print(
        f"   the reward, in-process on one core: {one_core:.3f} s ({len(cases) / one_core:,.0f} responses/s); "
        f"over {workers} processes at best {one_core / workers:.3f} s"
    )
    tensors = [kserve.Tensor(name, "BYTES", (len(cases), 1), [getattr(c, f) for c in cases]) for name, f in FIELDS]
    answer = [kserve.Tensor(n, "FP32", (len(cases), 1), np.zeros(len(cases), np.float32)) for n in "abcde"]
    answer.append(kserve.Tensor("errors", "BYTES", (len(cases), 1), [""] * len(cases)))
    for binary in (True, False):
        encode, decode, respond, size = _codec_costs(tensors, answer, binary)
        wire = "binary" if binary else "JSON"
        print(
            f"   v2 bodies, {wire:6s}: request {size / 1e6:.1f} MB, encode {encode * 1e3:.1f} ms, "
            f"decode {decode * 1e3:.1f} ms; answer encode {respond * 1e3:.1f} ms"
        )


def _codec_costs(tensors: list[kserve.Tensor], answer: list[kserve.Tensor], binary: bool) -> tuple[float, ...]:
    body, headers = kserve.encode_request(tensors, binary)
    encode = _best(lambda: kserve.encode_request(tensors, binary))
    decode = _best(lambda: kserve.decode_request(body, headers.get(kserve.HEADER_LENGTH)))
    names = {t.name for t in answer} if binary else set()
    respond = _best(lambda: kserve.encode_response("reward_model", "1", None, answer, names))
    return encode, decode, respond, len(body)


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def start_server(workers: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "nemo_spatial.reward.serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "reward.similarity=trigram",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = urllib3.HTTPConnectionPool("127.0.0.1", port, retries=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if http.request("GET", "/v2/health/ready", timeout=2).status == 200:
                print(f"server: python -m nemo_spatial.reward.serve --workers {workers} on 127.0.0.1:{port}")
                return process, f"http://127.0.0.1:{port}"
        except urllib3.exceptions.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the reward server did not become ready in 180 s")


def make_client(url: str, args: argparse.Namespace, in_flight: int) -> Any:
    if args.client == "tritonclient":
        return TritonClient(url, args.batch_size, in_flight, binary=not args.json)
    cfg = load_config(
        None,
        [
            "reward.similarity=trigram",
            "reward_service.mode=remote",
            f"reward_service.url={url}",
            f"reward_service.batch_size={args.batch_size}",
            f"reward_service.max_in_flight={in_flight}",
            f"reward_service.binary_data={'false' if args.json else 'true'}",
        ],
    )
    return RemoteRewardClient(cfg.reward_service, "spatialthinker", "trigram")


def rollout_latency(
    url: str, cases: list[RewardSample], expected: list[float], args: argparse.Namespace, server: Any
) -> None:
    client = make_client(url, args, args.in_flight)
    client.score_batch(cases[:512])  # open the connections
    processes = _process_tree(server.pid) if server is not None else []
    client_process = psutil.Process()
    cpu_before = [_cpu(p) for p in [*processes, client_process]]
    times = []
    for _ in range(args.rollouts):
        start = time.perf_counter()
        got = overall(client.score_batch(cases))
        times.append(time.perf_counter() - start)
        if got != expected:
            raise SystemExit("a rollout came back with scores that differ from in-process scoring")
    client.close()
    wire = "JSON" if args.json else "binary"
    print(
        f"2. rollout of {len(cases)} responses ({args.client} client, batches of {args.batch_size}, {args.in_flight} "
        f"in flight, {wire}): median {statistics.median(times):.3f} s, best {min(times):.3f} s, worst "
        f"{max(times):.3f} s of {len(times)}; target < 0.5 s; scores exact"
    )
    if processes:
        after = [_cpu(p) for p in [*processes, client_process]]
        spent = [(end - start) / args.rollouts for start, end in zip(cpu_before, after, strict=True)]
        names = [*_names(processes), "client (this process)"]
        parts = [f"{name} {seconds:.3f}" for name, seconds in zip(names, spent, strict=True) if seconds]
        print(
            f"   CPU seconds per rollout: {', '.join(parts)} (total {sum(spent):.3f} on {os.cpu_count()} cores; "
            f"load average now {os.getloadavg()[0]:.2f})"
        )


def _process_tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _names(processes: Sequence[psutil.Process]) -> list[str]:
    names, scorers = [], 0
    for process in processes:
        if process is processes[0]:
            names.append("server (HTTP, codec)")
        elif "forkserver" in " ".join(process.cmdline()) and process.ppid() != processes[0].pid:
            scorers += 1
            names.append(f"scoring process {scorers}")
        else:
            names.append(f"helper {process.pid}")
    return names


def load(url: str, cases: list[RewardSample], expected: list[float], args: argparse.Namespace) -> None:
    latencies: list[float] = []
    received: Counter[int] = Counter()
    wrong: list[str] = []
    lock = threading.Lock()

    def run_client(rank: int) -> None:
        client = make_client(url, args, 1)
        for b in range(args.batches):
            first = (rank * args.batches + b) * args.batch_size
            indices = range(first, first + args.batch_size)
            start = time.perf_counter()
            got = overall(client.score_batch([cases[i] for i in indices]))
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                received.update(indices)
                if got != [expected[i] for i in indices]:
                    wrong.append(f"client {rank} batch {b}")
        client.close()

    threads = [threading.Thread(target=run_client, args=(rank,)) for rank in range(args.clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    total = args.clients * args.batches * args.batch_size
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"3. load: {args.clients} clients x {args.batches} batches of {args.batch_size} = {total} responses in "
        f"{wall:.2f} s: {total / wall:,.0f} responses/s; batch latency p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} "
        f"ms"
    )
    exactly_once = (
        set(received.values()) == {1} and len(received) == total and len(latencies) == total // args.batch_size
    )
    verdict = "yes" if exactly_once and not wrong else "NO"
    print(f"   every response back exactly once, with its in-process score: {verdict}")
    if wrong or not exactly_once:
        raise SystemExit(f"wrong or missing answers: {wrong[:5]}")


def overall(batch: Any) -> list[float]:
    return [result.overall for result in batch.results] if hasattr(batch, "results") else list(batch)


class TritonClient:
    """tritonclient.http as an independent client (it works against PyTriton too); sends only the three inputs."""

    def __init__(self, url: str, batch_size: int, in_flight: int, binary: bool) -> None:
        import tritonclient.http as triton_http

        self.http, self.batch_size, self.binary = triton_http, batch_size, binary
        address = url.removeprefix("http://")
        self.client = triton_http.InferenceServerClient(address, concurrency=in_flight, network_timeout=300)

    def score_batch(self, samples: list[RewardSample]) -> list[float]:
        chunks = [samples[i : i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        futures = [self.client.async_infer("reward_model", self._inputs(chunk)) for chunk in chunks]
        rewards = [future.get_result().as_numpy("rewards").reshape(-1) for future in futures]
        return np.concatenate(rewards).astype(np.float32).tolist()

    def _inputs(self, samples: list[RewardSample]) -> list[Any]:
        inputs = []
        for name, field in FIELDS:
            array = np.array([getattr(s, field).encode() for s in samples], dtype=np.object_).reshape(-1, 1)
            tensor = self.http.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array, binary_data=self.binary)
            inputs.append(tensor)
        return inputs

    def close(self) -> None:
        self.client.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running v2 server (default: start one)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="scoring processes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8, help="batches per client")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=RewardServiceConfig.max_in_flight,
        help="concurrent requests of the rollout's client (default: the trainer's reward_service.max_in_flight)",
    )
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--client", choices=("native", "tritonclient"), default="native")
    parser.add_argument("--json", action="store_true", help="JSON bodies instead of binary tensor data")
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    main()
