"""The router over several servers, against small real HTTP servers (fake_server.py) on 127.0.0.1: spreading
whole groups over both, the weight push to all with each server's version read back, and the death
bookkeeping (a crashed server's groups go to the other, it restarts and is re-synced; a hung one is caught by
the health probe long before the request timeout)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests
import torch

from nemo_spatial.generation import GenerationConfig, GenerationRequest, GeneratorUnavailableError, SamplingConfig
from nemo_spatial.generation.client import ServerGenerator
from nemo_spatial.generation.process import ServerProcess
from nemo_spatial.generation.router import RouterGenerator


class FakeServerProcess(ServerProcess):
    """A spawned fake_server.py instead of vLLM; everything else (ports, log, stop, restart) is the real class."""

    def __init__(self, cfg: GenerationConfig, log: Path, server_id: int, *flags: str) -> None:
        super().__init__(cfg, "fake", log)
        self.server_id, self.flags = server_id, list(flags)

    def command(self) -> list[str]:
        module = "tests.unit.generation.fake_server"
        return [sys.executable, "-m", module, "--port", str(self.port), "--server-id", str(self.server_id), *self.flags]


def router(
    tmp_path: Path, flags: dict[int, list[str]] | None = None, placement: str = "apart", **cfg_overrides: object
) -> RouterGenerator:
    cfg = GenerationConfig(startup_timeout_s=30, request_timeout_s=60, health_timeout_s=1, **cfg_overrides)  # type: ignore[arg-type]
    members = []
    for i in range(2):
        member_cfg = GenerationConfig(
            startup_timeout_s=30, request_timeout_s=60, health_timeout_s=1, placement=placement
        )
        process = FakeServerProcess(member_cfg, tmp_path / f"server_{i}.log", i, *(flags or {}).get(i, []))
        process.start()
        process.wait_ready()
        members.append(ServerGenerator(member_cfg, process=process))
    return RouterGenerator(cfg, members)


def batch(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt_id=f"p{i}", prompt_token_ids=[1, 2, i]) for i in range(count)]


def weights() -> list[tuple[str, torch.Tensor]]:
    return [("a.weight", torch.ones(4, 4)), ("b.bias", torch.zeros(8))]


def server_info(gen: RouterGenerator, index: int) -> dict[str, int]:
    return requests.get(f"{gen.servers[index].member.url}/nemo/v1/health", timeout=5).json()


def test_groups_spread_over_both_servers_and_weights_reach_both(tmp_path: Path) -> None:
    gen = router(tmp_path)
    try:
        stats = gen.update_weights(iter(weights()), 1)
        assert stats.num_tensors == 2 and gen.weight_version == 1
        assert [server_info(gen, i)["weight_version"] for i in range(2)] == [1, 1]
        rollouts = gen.generate(batch(12), SamplingConfig(n=3))
        assert [(r.prompt_id, r.sample_index) for r in rollouts] == [(f"p{i}", s) for i in range(12) for s in range(3)]
        servers_of_groups = [{r.token_ids[0] for r in rollouts[g * 3 : g * 3 + 3]} for g in range(12)]
        assert all(len(s) == 1 for s in servers_of_groups)  # a group stays on one server
        assert {next(iter(s)) for s in servers_of_groups} == {0, 1}
        assert all(r.weight_version == 1 for r in rollouts)
        metrics = gen.release_memory()
        assert metrics["generation/server0_groups"] + metrics["generation/server1_groups"] == 12
        assert metrics["generation/server0_busy_s"] > 0 and metrics["generation/server1_busy_s"] > 0
        assert 0 <= metrics["generation/tail_s"] < metrics["generation/wall_s"]
    finally:
        gen.close()


def test_a_crashed_server_restarts_its_groups_go_to_the_other_and_the_refit_reaches_it(tmp_path: Path) -> None:
    crash = tmp_path / "crash-once"
    crash.touch()
    gen = router(tmp_path, {0: ["--crash-flag", str(crash), "--seconds-per-prompt", "0.3"]}, on_server_death="restart")
    try:
        gen.update_weights(iter(weights()), 1)
        rollouts = gen.generate(batch(8), SamplingConfig(n=2))
        assert len(rollouts) == 16 and all(r.weight_version == 1 and r.token_ids[0] == 1 for r in rollouts)
        assert not crash.exists() and gen.servers[0].restarts == 1
        gen._wait_restarts()
        assert gen.servers[0].member.process.starts == 2  # type: ignore[union-attr]
        assert gen.weight_version == 0  # the restarted server lags: the trainer's refit pushes again
        gen.update_weights(iter(weights()), 1)
        assert server_info(gen, 0)["syncs"] == 1 and server_info(gen, 1)["syncs"] == 1  # only the lagging one
        again = gen.generate(batch(8), SamplingConfig(n=2))
        assert {r.token_ids[0] for r in again} == {0, 1} and gen.weight_version == 1
    finally:
        gen.close()


@pytest.mark.parametrize("policy", ["restart", "stop"])
def test_a_colocated_server_that_dies_asleep_is_restarted_at_its_wake_or_stops_the_run(
    tmp_path: Path, policy: str
) -> None:
    """Asleep between phases, no request or probe reaches a colocated server: its death shows at the wake."""
    gen = router(tmp_path, placement="colocated", on_server_death=policy)
    try:
        gen.update_weights(iter(weights()), 1)
        gen.generate(batch(4), SamplingConfig(n=2))
        gen.release_memory()
        assert [server_info(gen, i)["sleeping"] for i in range(2)] == [True, True]
        gen.servers[0].member.process.proc.kill()  # type: ignore[union-attr]
        gen.servers[0].member.process.proc.wait()  # type: ignore[union-attr]
        if policy == "stop":
            with pytest.raises(GeneratorUnavailableError, match="server 0 .* died \\(found at its wake\\)"):
                gen.prepare_for_generation()
            return
        gen.prepare_for_generation()
        assert gen.servers[0].member.process.starts == 2 and gen.servers[0].state == "ready"  # type: ignore[union-attr]
        assert [server_info(gen, i)["sleeping"] for i in range(2)] == [False, False]  # the new one starts awake
        assert gen.weight_version == 0  # the refit re-syncs the restarted server, then both serve
        gen.update_weights(iter(weights()), 1)
        assert {r.token_ids[0] for r in gen.generate(batch(8), SamplingConfig(n=2))} == {0, 1}
    finally:
        gen.close()


def test_a_hung_server_is_caught_by_the_health_probe_and_stops_the_run_with_its_log(tmp_path: Path) -> None:
    hang = tmp_path / "hang"
    hang.touch()
    gen = router(tmp_path, {0: ["--hang-flag", str(hang)]}, health_interval_s=0.5, on_server_death="stop")
    try:
        gen.servers[0].probing = True  # an earlier batch ended with its probe's answer unread: probed again here
        started = time.monotonic()
        with pytest.raises(GeneratorUnavailableError, match="server 0 .*hung: 3 health probes") as error:
            gen.generate(batch(8), SamplingConfig(n=2))
        assert time.monotonic() - started < 20  # the request timeout is 60 s
        assert "fake server 0" in error.value.log_tail
    finally:
        gen.close()


def test_build_generator_keeps_one_server_as_today_and_routes_several(tmp_path: Path) -> None:
    from nemo_spatial.generation import build_generator

    one = build_generator(GenerationConfig(urls=["http://127.0.0.1:9"]), "unused", tmp_path)
    assert type(one) is ServerGenerator and one.url == "http://127.0.0.1:9"
    several = build_generator(GenerationConfig(urls=["http://127.0.0.1:9", "http://127.0.0.1:10"]), "unused", tmp_path)
    assert isinstance(several, RouterGenerator) and [s.member.url for s in several.servers] == [
        "http://127.0.0.1:9",
        "http://127.0.0.1:10",
    ]
