"""`RouterGenerator`: one Generator over several generation servers (data-parallel rollouts).

What it computes: the rollouts of a batch, spread over N servers (spawned here: `generation.num_servers`, or
running elsewhere: `generation.urls`), with every server holding the trainer's weight version.

Dispatch: whole groups (a prompt's n samples stay on one server, so a group is never split over weight copies)
are PULLED FROM A QUEUE in chunks; each server keeps `SLOTS` chunks in flight and takes the next chunk as one
returns. Chosen over balancing by expected length because a response's length is unknown until it is sampled
(a length predictor is only as good as the last step's lengths, and GRPO's lengths drift as it learns), while a
queue balances by the lengths actually produced: the tail (the time between the first and the last server
finishing) is bounded by about one chunk's time. A chunk is sized to fill a server's batch (`max_num_seqs`
sequences over its slots) but at most 1/(2N) of the batch, so the queue still holds work when the first server
frees up. `release_memory()` returns the phase's metrics: per-server busy seconds and groups, and the tail.

Weights: `update_weights` pushes to every server that is not at `version` at once (fanout.py: one shm write
or one broadcast for all), then reads each server's reported version back (`ServerGenerator.confirm_version`);
each chunk's rollouts are checked against the version too before they are accepted.

Failure, per server (`generation.on_server_death`): `stop` raises GeneratorUnavailableError with that server's
log tail. `restart` puts the server's unfinished groups back on the queue for the others, restarts that one
server in the background, and lets it serve again only once it holds the current version: at version 0 right
away, later after the next refit pushes to it (the router's `weight_version` is the lowest of its servers',
so the trainer's refit sees the lag). Only when no server can serve does the call raise
GeneratorRestartedError (the trainer refits, then asks again). A health probe runs every
`generation.health_interval_s` against each busy server: a dead process or HUNG_AFTER_FAILED_PROBES failed
probes in a row marks it hung (a spawned one is killed, which ends its requests), well before the request
timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import requests

from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.client import ServerGenerator
from nemo_spatial.generation.config import GenerationConfig, SamplingConfig, check_nccl_available
from nemo_spatial.generation.fanout import FanoutControl
from nemo_spatial.generation.process import ServerProcess
from nemo_spatial.generation.transport import BroadcastTransport, ShmTransport, WeightTransport
from nemo_spatial.generation.types import (
    GenerationRequest,
    GeneratorHealth,
    GeneratorRestartedError,
    GeneratorUnavailableError,
    Rollout,
    SyncStats,
    WeightSyncError,
    require_version,
)
from nemo_spatial.net import free_port

if TYPE_CHECKING:
    import torch

    from nemo_spatial.generation.broadcast import GroupSpec

logger = logging.getLogger(__name__)
T = TypeVar("T")
SLOTS = 2  # requests in flight per server: the next chunk is queued in vLLM while the current one drains
HUNG_AFTER_FAILED_PROBES = 3


@dataclasses.dataclass
class _Server:
    """The router's bookkeeping of one server (touched by the dispatch loop's thread only)."""

    index: int
    member: ServerGenerator
    state: str = "ready"  # ready | restarting
    restarts: int = 0
    in_flight: dict[int, list[int]] = dataclasses.field(default_factory=dict)  # ticket -> group indices
    busy_since: float | None = None
    busy_s: float = 0.0
    groups: int = 0
    finished_at: float | None = None
    failed_probes: int = 0
    probing: bool = False
    restart_thread: threading.Thread | None = None


@dataclasses.dataclass
class _Batch:
    """One generate() call's state."""

    requests: list[GenerationRequest]
    params: SamplingConfig
    pending: deque[list[int]]
    results: dict[int, list[Rollout]] = dataclasses.field(default_factory=dict)
    events: queue.Queue[tuple[str, int, int, object]] = dataclasses.field(default_factory=queue.Queue)
    next_ticket: int = 0


class RouterGenerator:
    """Generator over several servers; see the module docstring for dispatch, weights and failures."""

    def __init__(self, cfg: GenerationConfig, members: list[ServerGenerator]) -> None:
        if len(members) < 2:
            raise ValueError("a router spreads over at least two servers; one server is a ServerGenerator")
        self.cfg = cfg
        self.servers = [_Server(i, m) for i, m in enumerate(members)]
        self._target = 0  # the version the trainer last pushed: a server serves only while it holds it
        self._transports: dict[tuple[int, ...], tuple[WeightTransport, FanoutControl]] = {}
        self._last_metrics: dict[str, float] = {}
        self._restart_events: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()

    @classmethod
    def launch(cls, cfg: GenerationConfig, model_dir: str, log_dir: str | Path, num_servers: int) -> RouterGenerator:
        """Spawn `num_servers` servers on this host (own port, own KV cache, own log) and wait for all of them."""
        processes = []
        devices = _server_devices(num_servers, cfg.tensor_parallel_size)
        for i in range(num_servers):
            member_cfg = _member_config(cfg, port=cfg.port + i if cfg.port else 0)
            env = {"CUDA_VISIBLE_DEVICES": devices[i]} if devices else None
            log = Path(log_dir) / f"generation_server_{i}.log"
            processes.append(ServerProcess(member_cfg, model_dir, log, env=env))
        try:
            for process in processes:
                process.start()
            for process in processes:
                process.wait_ready()
        except BaseException:
            for process in processes:
                process.stop()
            raise
        return cls(cfg, [ServerGenerator(process.cfg, process=process) for process in processes])

    @classmethod
    def connect(cls, cfg: GenerationConfig, urls: list[str]) -> RouterGenerator:
        """Servers started elsewhere (the SLURM launcher's); a death there stops the run (config.py)."""
        return cls(cfg, [ServerGenerator(_member_config(cfg), url=url) for url in urls])

    # ---- the Generator protocol --------------------------------------------------------------------------
    @property
    def weight_version(self) -> int:
        """The lowest version any server holds: a restarted server (0) makes the trainer's refit push again."""
        return min(s.member.weight_version for s in self.servers)

    def generate(self, requests_: list[GenerationRequest], params: SamplingConfig) -> list[Rollout]:
        if not requests_:
            return []
        self._collect_restarts()
        chunk = self._chunk_groups(len(requests_), params.n)
        groups = list(range(len(requests_)))
        batch = _Batch(requests_, params, deque(groups[i : i + chunk] for i in range(0, len(groups), chunk)))
        started = time.monotonic()
        for server in self.servers:
            server.busy_s, server.groups, server.finished_at, server.busy_since = 0.0, 0, None, None
            # A probe answer or request of an earlier batch went to that batch's queue: forget it here, or the
            # server would never be probed again (probing stuck) or never finish (in_flight never emptied).
            server.probing, server.failed_probes = False, 0
            server.in_flight.clear()
        self._dispatch(batch)
        self._last_metrics = self._phase_metrics(started)
        return [rollout for g in groups for rollout in batch.results[g]]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        """Push to every server not at `version`, all at once; then check each one's reported version."""
        self._wait_restarts()
        targets = tuple(s.index for s in self.servers if s.member.weight_version != version)
        if not targets:
            count = sum(1 for _ in named_tensors)
            return SyncStats(version, count, 0, 0, 0.0)
        transport, fanout = self._transport_for(targets)
        fanout.failed.clear()
        try:
            stats = transport.sync(named_tensors, version)
        except WeightSyncError as error:
            self._drop_transport(targets)
            if fanout.failed:
                self._restart_failed(targets, fanout, error)
            raise
        for position, index in enumerate(targets):
            if position not in fanout.failed:
                self.servers[index].member.confirm_version(version)
        self._target = version
        if fanout.failed:
            self._restart_failed(targets, fanout, None)
        return stats

    def health(self) -> GeneratorHealth:
        states = [s.member.health() for s in self.servers]
        bad = [f"server {i} ({self.servers[i].member.url}): {h.detail}" for i, h in enumerate(states) if not h.ok]
        versions = [h.weight_version for h in states if h.weight_version is not None]
        low = min(versions) if versions else None
        return GeneratorHealth(not bad, low, "; ".join(bad), states[0].model, states[0].max_model_len)

    def prepare_for_generation(self) -> dict[str, float]:
        """Wake every running server (a restarting one comes back awake), in parallel; one that died asleep is
        restarted under on_server_death=restart (it comes back awake, at version 0: the refit re-syncs it)."""
        return _slowest(self._on_ready_restarting_the_dead(lambda s: s.member.prepare_for_generation(), "wake"))

    def release_memory(self) -> dict[str, float]:
        """The phase's metrics (per-server busy time, groups, tail), and the running servers put to sleep."""
        # A server still restarting would come up awake during the trainer's phase (colocated: out of memory).
        self._wait_restarts()
        slept = self._on_ready_restarting_the_dead(lambda s: s.member.release_memory(), "sleep")
        metrics = {**self._last_metrics, **_slowest(slept)}
        self._last_metrics = {}
        return metrics

    def close(self) -> None:
        for transport, fanout in self._transports.values():
            transport.close()
            fanout.close()
        self._transports.clear()
        self._in_parallel(lambda s: s.member.close(), self.servers)

    # ---- dispatch -----------------------------------------------------------------------------------------
    def _chunk_groups(self, num_groups: int, n: int) -> int:
        per_slot = max(1, math.ceil(self.cfg.max_num_seqs / (SLOTS * n)))
        return max(1, min(per_slot, math.ceil(num_groups / (2 * len(self.servers)))))

    def _serving(self, server: _Server) -> bool:
        return server.state == "ready" and server.member.weight_version == self._target

    def _dispatch(self, batch: _Batch) -> None:
        """The loop: hand chunks to free slots, take results and failures, probe busy servers, until done."""
        next_probe = time.monotonic() + self.cfg.health_interval_s
        while batch.pending or any(s.in_flight for s in self.servers):
            for server in self.servers:
                while batch.pending and self._serving(server) and len(server.in_flight) < SLOTS:
                    self._send(server, batch, batch.pending.popleft())
            if batch.pending and not any(s.in_flight for s in self.servers):
                self._wait_for_a_server(batch)
                continue
            try:
                kind, index, ticket, payload = batch.events.get(timeout=max(0.05, next_probe - time.monotonic()))
            except queue.Empty:
                kind = ""
            if kind:
                self._handle(batch, kind, self.servers[index], ticket, payload)
            self._collect_restarts()
            if time.monotonic() >= next_probe:
                self._probe_busy(batch)
                next_probe = time.monotonic() + self.cfg.health_interval_s

    def _send(self, server: _Server, batch: _Batch, groups: list[int]) -> None:
        ticket = batch.next_ticket
        batch.next_ticket += 1
        if not server.in_flight:
            server.busy_since = time.monotonic()
        server.in_flight[ticket] = groups
        chunk = [batch.requests[g] for g in groups]

        def run() -> None:
            try:
                batch.events.put(("done", server.index, ticket, server.member.generate(chunk, batch.params)))
            except BaseException as error:  # noqa: BLE001 - handed to the dispatch loop, which decides
                batch.events.put(("failed", server.index, ticket, error))

        threading.Thread(target=run, name=f"rollouts-{server.index}-{ticket}", daemon=True).start()

    def _handle(self, batch: _Batch, kind: str, server: _Server, ticket: int, payload: object) -> None:
        if kind == "probe":
            self._probe_result(batch, server, payload)
            return
        groups = server.in_flight.pop(ticket, None)
        if groups is None:  # a request of a server already declared dead: its groups were requeued
            return
        now = time.monotonic()
        if not server.in_flight and server.busy_since is not None:
            server.busy_s += now - server.busy_since
            server.busy_since = None
        if kind == "done":
            assert isinstance(payload, list)
            require_version(payload, self._target)  # the server's own record of the weights it sampled with
            n = batch.params.n
            for position, g in enumerate(groups):
                batch.results[g] = payload[position * n : (position + 1) * n]
            server.groups += len(groups)
            server.finished_at = now
            return
        batch.pending.appendleft(groups)
        if isinstance(payload, GeneratorUnavailableError):
            self._server_died(batch, server, payload)
        else:
            raise payload if isinstance(payload, BaseException) else RuntimeError(str(payload))

    def _server_died(self, batch: _Batch, server: _Server, error: GeneratorUnavailableError) -> None:
        """Requeue the server's groups for the others; restart it (policy restart) or stop the run."""
        for groups in server.in_flight.values():
            batch.pending.appendleft(groups)
        server.in_flight.clear()
        if server.busy_since is not None:
            server.busy_s += time.monotonic() - server.busy_since
            server.busy_since = None
        if not self._can_restart(server):
            raise GeneratorUnavailableError(
                f"generation server {server.index} of {len(self.servers)} ({server.member.url}) failed: "
                f"{str(error).split(chr(10), 1)[0]}",
                error.log_tail,
            )
        logger.error("generation server %d died; the other servers take its groups while it restarts", server.index)
        self._start_restart(server, error)

    def _wait_for_a_server(self, batch: _Batch) -> None:
        """Work is left but no server may take it: wait for a restart, or tell the trainer to refit."""
        restarting = [s for s in self.servers if s.state == "restarting"]
        if restarting:
            index, failure = self._restart_events.get(timeout=self.cfg.startup_timeout_s + 60)
            self._restart_done(self.servers[index], failure)
            return
        raise GeneratorRestartedError(
            f"no generation server holds weight version {self._target} (restarted from the checkpoint): "
            "push the weights again, then ask again"
        )

    # ---- health probes ------------------------------------------------------------------------------------
    def _probe_busy(self, batch: _Batch) -> None:
        for server in self.servers:
            if server.in_flight and not server.probing:
                server.probing = True
                threading.Thread(target=self._probe, args=(batch, server), daemon=True).start()

    def _probe(self, batch: _Batch, server: _Server) -> None:
        process = server.member.process
        if process is not None and not process.alive():
            batch.events.put(("probe", server.index, -1, f"process exited with code {process.exit_code()}"))
            return
        try:
            answer = requests.get(f"{server.member.url}/nemo/v1/health", timeout=self.cfg.health_timeout_s)
            detail = "" if answer.status_code == 200 else f"health answered {answer.status_code}"
        except requests.RequestException as error:
            detail = f"health probe got no answer within {self.cfg.health_timeout_s:.0f} s ({type(error).__name__})"
        batch.events.put(("probe", server.index, -1, detail))

    def _probe_result(self, batch: _Batch, server: _Server, detail: object) -> None:
        server.probing = False
        if server.state != "ready" or not server.in_flight:
            return  # declared dead (and restarting) already, or idle again: the answer is about the past
        if not detail:
            server.failed_probes = 0
            return
        server.failed_probes += 1
        dead = "exited" in str(detail)
        if not dead and server.failed_probes < HUNG_AFTER_FAILED_PROBES:
            return
        server.failed_probes = 0
        message = f"{detail}" if dead else f"hung: {HUNG_AFTER_FAILED_PROBES} health probes in a row failed ({detail})"
        logger.error("generation server %d (%s) %s", server.index, server.member.url, message)
        tail = server.member.process.log_tail() if server.member.process is not None else ""
        if server.member.process is not None:
            server.member.process.stop(timeout_s=5.0)  # ends its open requests (they come back as failures)
        self._server_died(batch, server, GeneratorUnavailableError(message, tail))

    # ---- restarts -----------------------------------------------------------------------------------------
    def _can_restart(self, server: _Server) -> bool:
        return (
            self.cfg.on_server_death == "restart"
            and server.member.process is not None
            and server.restarts < self.cfg.max_restarts
        )

    def _start_restart(self, server: _Server, cause: GeneratorUnavailableError) -> None:
        server.state = "restarting"
        server.restarts += 1
        # A cached transport that holds this server (an NCCL group joined by its old workers) is dead with it.
        for targets in [t for t in self._transports if server.index in t]:
            self._drop_transport(targets)

        def run() -> None:
            try:
                server.member.restart(cause)
                self._restart_events.put((server.index, None))
            except BaseException as error:  # noqa: BLE001 - reported by the dispatch loop
                self._restart_events.put((server.index, error))

        server.restart_thread = threading.Thread(target=run, name=f"restart-{server.index}", daemon=True)
        server.restart_thread.start()

    def _restart_done(self, server: _Server, failure: BaseException | None) -> None:
        if failure is not None:
            tail = getattr(failure, "log_tail", "")
            raise GeneratorUnavailableError(f"generation server {server.index} could not restart: {failure}", tail)
        server.state = "ready"
        logger.warning(
            "generation server %d restarted (version 0); it serves again %s", server.index,
            "now" if self._target == 0 else f"once the next refit pushes version {self._target}",
        )  # fmt: skip

    def _collect_restarts(self) -> None:
        while True:
            try:
                index, failure = self._restart_events.get_nowait()
            except queue.Empty:
                return
            self._restart_done(self.servers[index], failure)

    def _wait_restarts(self) -> None:
        self._collect_restarts()
        while any(s.state == "restarting" for s in self.servers):
            index, failure = self._restart_events.get(timeout=self.cfg.startup_timeout_s + 60)
            self._restart_done(self.servers[index], failure)

    def _restart_failed(self, targets: tuple[int, ...], fanout: FanoutControl, error: Exception | None) -> None:
        """Servers that died during a sync: restart them (then GeneratorRestartedError) or stop."""
        for position, cause in list(fanout.failed.items()):
            server = self.servers[targets[position]]
            if not self._can_restart(server):
                raise GeneratorUnavailableError(
                    f"generation server {server.index} ({server.member.url}) died during the weight sync: {cause}",
                    cause.log_tail,
                ) from error
            self._start_restart(server, cause)
        self._wait_restarts()
        raise GeneratorRestartedError(
            "a generation server died during the weight sync and was restarted from its checkpoint; push again"
        ) from error

    # ---- weight transports --------------------------------------------------------------------------------
    def _transport_for(self, targets: tuple[int, ...]) -> tuple[WeightTransport, FanoutControl]:
        if targets not in self._transports:
            controls = [self.servers[i].member.control for i in targets]
            if self.cfg.transport == "shm":
                fanout = FanoutControl(controls)
                transport: WeightTransport = ShmTransport(
                    fanout, self.cfg.bucket_bytes, self.cfg.dtype, self.cfg.shm_dir
                )
            else:
                check_nccl_available()
                spec, offsets = self._group_spec(targets)
                fanout = FanoutControl(controls, offsets)
                transport = BroadcastTransport(fanout, spec, self.cfg.bucket_bytes, self.cfg.dtype)
            self._transports[targets] = (transport, fanout)
        return self._transports[targets]

    def _group_spec(self, targets: tuple[int, ...]) -> tuple[GroupSpec, list[int]]:
        """One broadcast group for all target servers: rank 0 the trainer, then each server's workers in turn."""
        from nemo_spatial.generation.broadcast import GroupSpec

        timeout = self.cfg.health_timeout_s
        worlds = [
            int(self.servers[i].member.control.call("GET", "/nemo/v1/health", timeout=timeout)["world_size"])
            for i in targets
        ]
        offsets = [1 + sum(worlds[:k]) for k in range(len(worlds))]
        address = self.cfg.nccl_master_address or "127.0.0.1"
        port = self.cfg.nccl_master_port or free_port(address)
        return GroupSpec("nccl", address, port, 1 + sum(worlds), 1, self.cfg.request_timeout_s), offsets

    def _drop_transport(self, targets: tuple[int, ...]) -> None:
        entry = self._transports.pop(targets, None)
        if entry is not None:
            entry[0].close()
            entry[1].close()

    # ---- metrics and helpers ------------------------------------------------------------------------------
    def _phase_metrics(self, started: float) -> dict[str, float]:
        metrics: dict[str, float] = {}
        finished = [s.finished_at for s in self.servers if s.finished_at is not None]
        for server in self.servers:
            metrics[f"generation/server{server.index}_busy_s"] = server.busy_s
            metrics[f"generation/server{server.index}_groups"] = float(server.groups)
            metrics[f"generation/server{server.index}_restarts"] = float(server.restarts)
        metrics["generation/servers_used"] = float(len(finished))
        metrics["generation/tail_s"] = max(finished) - min(finished) if finished else 0.0
        metrics["generation/wall_s"] = time.monotonic() - started
        return metrics

    def _on_ready_restarting_the_dead(self, work: Callable[[_Server], T], what: str) -> list[T]:
        """`work` on every ready server in parallel. A server found dead (a colocated one may die asleep, between
        requests, where no request or probe sees it) is restarted under on_server_death=restart and `work` done
        on it again once it is back; otherwise the run stops with its log tail."""

        def guarded(server: _Server) -> T | GeneratorUnavailableError:
            try:
                return work(server)
            except GeneratorUnavailableError as error:
                return error

        results: list[T] = []
        dead: list[_Server] = []
        self._collect_restarts()
        servers = [s for s in self.servers if s.state == "ready"]
        for server, result in zip(servers, self._in_parallel(guarded, servers), strict=True):
            if not isinstance(result, GeneratorUnavailableError):
                results.append(result)
                continue
            if not self._can_restart(server):
                first_line = str(result).splitlines()[0]
                raise GeneratorUnavailableError(
                    f"generation server {server.index} ({server.member.url}) died (found at its {what}): {first_line}",
                    result.log_tail,
                ) from result
            logger.error("generation server %d died (found at its %s); restarting it", server.index, what)
            self._start_restart(server, result)
            dead.append(server)
        if dead:
            self._wait_restarts()
            results += [work(server) for server in dead]
        return results

    def _in_parallel(self, work: Callable[[_Server], T], servers: list[_Server]) -> list[T]:
        with ThreadPoolExecutor(max_workers=len(self.servers), thread_name_prefix="router") as pool:
            return list(pool.map(work, servers))


def _member_config(cfg: GenerationConfig, port: int = 0) -> GenerationConfig:
    """A server's own config: its port, and no restart of its own (the router restarts, per server)."""
    return dataclasses.replace(cfg, port=port, on_server_death="stop", url="", urls=[], num_servers=1)


def _server_devices(num_servers: int, tensor_parallel_size: int) -> list[str]:
    """Each spawned server's CUDA_VISIBLE_DEVICES: server i gets the i-th run of `tensor_parallel_size` of this
    process's visible GPUs (none on a CPU host: every server shares the cores and has its own KV cache)."""
    import os

    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [d for d in visible.split(",") if d] if visible else [str(i) for i in range(torch.cuda.device_count())]
    needed = num_servers * tensor_parallel_size
    if needed > len(ids):
        raise ConfigError(
            f"generation.num_servers={num_servers} x generation.tensor_parallel_size={tensor_parallel_size} needs "
            f"{needed} GPUs; {len(ids)} are visible. Lower generation.num_servers or the tensor-parallel size"
        )
    return [",".join(ids[i * tensor_parallel_size : (i + 1) * tensor_parallel_size]) for i in range(num_servers)]


def _slowest(results: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the slowest server's seconds (the phase waits for all of them)."""
    merged: dict[str, float] = {}
    for result in results:
        for key, value in result.items():
            merged[key] = max(merged.get(key, value), value)
    return merged
