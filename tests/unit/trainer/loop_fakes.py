"""Small fakes of the loop's interfaces (nemo_spatial.contracts) that drive `Trainer.fit` in seconds.

The policy fake trains a real tensor with the real GRPO loss through `loss_fn` (so a broken batch or loss input
fails), and its weight export is collective when a process group exists (an all-reduce per tensor), as the
Megatron policy's is: a rank that skipped a refit would hang the others (the test's timeout catches that).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from PIL import Image

from nemo_spatial.algorithms.aggregation import LossScale
from nemo_spatial.batch import PolicyBatch
from nemo_spatial.config import Config, load_config
from nemo_spatial.generation.config import SamplingConfig
from nemo_spatial.generation.types import (
    GenerationRequest,
    GeneratorHealth,
    GeneratorRestartedError,
    Rollout,
    SyncStats,
)
from nemo_spatial.logging_sinks import MetricsLogger
from nemo_spatial.reward import BatchResult, RewardResult, RewardSample
from nemo_spatial.reward.client import RewardServiceError, sample_fields

REPO = Path(__file__).resolve().parents[3]
PROMPT_TOKENS = 5
PATCHES = 4  # a (1, 2, 2) grid


def config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(
        REPO / "conf/debug/tiny_cpu.yaml",
        [
            f"run.output_dir={tmp_path}", "run.name=fake", "data.val_files=", "logging.wandb_mode=disabled",
            "logging.tensorboard=false", "logging.progress_bar=false", "logging.rollout_sample_every=0",
            "generation.sampling.n=2", "policy.micro_batch_size=2", "trainer.prompts_per_step=4",
            "trainer.prompts_per_update=2", "trainer.total_steps=3", "trainer.save_every=0", "algorithm.kl_coef=0",
            *overrides,
        ],
    )  # fmt: skip


@dataclass
class FakePrompt:
    row: int
    raw_prompt_ids: list[int]
    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor
    image: Image.Image
    ground_truth: str
    problem: str


def fake_pixels(row: int) -> torch.Tensor:
    return torch.full((PATCHES, 6), float(row))


class FakePrompts:
    """Prompt i: tokens [1, i+2, ...], a 4-patch image filled with i; resumable by position. `pixels=False`:
    no pixel_values (as the GRPO driver's stream gives them; a `FakePixelPreparer` makes them)."""

    def __init__(self, pixels: bool = True) -> None:
        self.offset = 0
        self.pixels = pixels

    def _prompt(self, row: int) -> FakePrompt:
        ids = torch.tensor([1, row + 2] + [3] * (PROMPT_TOKENS - 2))
        return FakePrompt(
            row, ids.tolist(), ids, fake_pixels(row) if self.pixels else None, torch.tensor([[1, 2, 2]]),
            Image.new("RGB", (8, 8), (row % 255, 0, 0)), f"answer {row}", f"Image size: (8 x 8) question {row}",
        )  # fmt: skip

    def next_batch(self, size: int) -> list[FakePrompt]:
        batch = [self._prompt(self.offset + i) for i in range(size)]
        self.offset += size
        return batch

    def one_pass(self) -> Iterator[FakePrompt]:
        return iter([self._prompt(1000 + i) for i in range(3)])

    def metrics(self) -> dict[str, float]:
        return {"data/skipped": 0.0, "data/truncated": 1.0, "data/epoch": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.offset = state["offset"]


@dataclass
class FakePixelPreparer:
    """A rank's pixel preparation: records the rows of the prompts it was handed, per step."""

    calls: list[list[int]] = field(default_factory=list)

    def __call__(self, prompts: dict[int, Any]) -> dict[int, Any]:
        self.calls.append(sorted(p.row for p in prompts.values()))
        return {i: replace(p, pixel_values=fake_pixels(p.row)) for i, p in prompts.items()}


@dataclass
class FakeGenerator:
    """Rollouts whose response is [10 + prompt row, 11]; `fail_rows` come back as errors; `restart_on_calls`:
    generate() calls (1-based) at which the 'server' dies and restarts (version 0, GeneratorRestartedError)."""

    fail_rows: set[int] = field(default_factory=set)
    restart_on_calls: set[int] = field(default_factory=set)
    version: int = 0
    calls: int = 0
    pushes: list[int] = field(default_factory=list)
    rows_seen: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the phase hooks, generate and update_weights, in call order
    phase_metrics: dict[str, float] = field(default_factory=dict)  # what release_memory returns (a router's)

    @property
    def weight_version(self) -> int:
        return self.version

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[Rollout]:
        self.calls += 1
        self.events.append("generate")
        if self.calls in self.restart_on_calls:
            had, self.version = self.version, 0
            if had:
                raise GeneratorRestartedError(f"restarted; push weight version {had} again")
        out = []
        for request in requests:
            row = request.prompt_token_ids[1] - 2  # type: ignore[index]
            self.rows_seen.append(row)
            for i in range(params.n):
                if row in self.fail_rows:
                    out.append(Rollout(request.prompt_id, i, [], [], self.version, "error", error=f"row {row} broke"))
                else:
                    out.append(
                        Rollout(request.prompt_id, i, [10 + row % 50, 11 + i], [-0.5, -0.25], self.version, "stop")
                    )
        return out

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        count = sum(1 for _ in named_tensors)
        self.events.append("update_weights")
        self.version = version
        self.pushes.append(version)
        return SyncStats(version, count, 4 * count, 1, 0.01)

    def health(self) -> GeneratorHealth:
        return GeneratorHealth(True, self.version)

    def prepare_for_generation(self) -> dict[str, float]:
        self.events.append("prepare_for_generation")
        return {}

    def release_memory(self) -> dict[str, float]:
        self.events.append("release_memory")
        return {**self.phase_metrics, "generation/calls": float(self.calls)}

    def close(self) -> None:
        return None


@dataclass
class FakeReward:
    """Reward 1 for a response whose second token is even, else 0; raises once `fail_after` batches were scored."""

    fail_after: int | None = None
    batches: int = 0

    def score_batch(self, samples: list[RewardSample]) -> BatchResult:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RewardServiceError("reward server at 127.0.0.1:5555 refused the connection")
        self.batches += 1
        results = [
            RewardResult(float(s.response.endswith("even")), float(s.response.endswith("even")), 0.0, 0.0, 0.0)
            for s in samples
        ]
        return BatchResult(results, n_errors=0)

    def sample_fields(self, response: str) -> dict[str, Any]:
        return sample_fields(response)

    def close(self) -> None:
        return None


def decode(token_ids: list[int]) -> str:
    return f"<answer>{token_ids}</answer> {'even' if token_ids[-1] % 2 == 0 else 'odd'}"


class FakePolicy:
    """One weight tensor trained by the loss the loop passes; records the batches it was given."""

    def __init__(
        self,
        rank: int = 0,
        size: int = 1,
        micro_batch_size: int = 2,
        signal_at_step: int | None = None,
        events: list[str] | None = None,
    ):
        self.rank, self.size, self.micro_batch_size = rank, size, micro_batch_size
        # offload / reload / train_step in call order (pass the generator's list: one timeline of both)
        self.events = [] if events is None else events
        self.offloaded = False
        self.weight = torch.zeros(1, requires_grad=True)
        self.trained_rows: list[int] = []
        self.step = 0
        self.signal_at_step = signal_at_step  # send SIGUSR1 to this process after this many optimizer steps

    @property
    def sample_multiple(self) -> int:
        return self.size * self.micro_batch_size

    @property
    def data_shard(self) -> tuple[int, int]:
        return self.rank, self.size

    def _log_probs(self, batch: PolicyBatch) -> torch.Tensor:
        # Depends on the tokens and on the weight, so the loss has a gradient.
        tokens = batch.input_ids.float()
        return -(tokens % 7 + 1) * 0.1 * batch.attention_mask + self.weight * (tokens % 3 + 1) * batch.response_mask

    def compute_log_probs(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        assert not self.offloaded, "a training forward while the optimizer state is offloaded"
        with torch.no_grad():
            log_probs = self._log_probs(batch)
        return log_probs, torch.zeros_like(log_probs)

    def reference_log_probs(self, batch: PolicyBatch) -> torch.Tensor:
        return self.compute_log_probs(batch)[0]

    def offload_to_host(self) -> dict[str, float]:
        self.events.append("offload")
        self.offloaded = True
        return {"timing/offload_s": 0.5, "offload/optimizer_bytes": 12.0, "offload/grad_bytes": 4.0}

    def reload_to_device(self) -> dict[str, float]:
        self.events.append("reload")
        self.offloaded = False
        return {"timing/reload_s": 0.25}

    def train_step(self, batch: PolicyBatch, loss_fn: Any) -> dict[str, float]:
        assert not self.offloaded, "train_step while the optimizer state is offloaded"
        self.events.append("train_step")
        assert batch.pixel_values is not None and batch.image_index is not None
        # Images are held once per prompt: the n samples of a group point at one image.
        assert batch.image_grid_thw is not None and batch.image_grid_thw.shape[0] == len(
            set(batch.image_index.tolist())
        )
        self.trained_rows.append(batch.batch_size)
        scale = LossScale.for_global_batch([batch.response_mask])
        loss, metrics = loss_fn(self._log_probs(batch), batch, scale)
        loss.backward()
        with torch.no_grad():
            self.weight -= 0.1 * self.weight.grad  # type: ignore[operator]
            self.weight.grad = None
        self.step += 1
        if self.signal_at_step is not None and self.step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)
        return {**metrics, "grad_norm": 1.0}

    def named_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in ("w0", "w1", "w2"):
            tensor = self.weight.detach().clone()
            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(tensor)  # collective, like the Megatron export's gathers
            yield name, tensor

    def save_checkpoint(self, path: str) -> None:
        assert not self.offloaded, "a checkpoint while the optimizer state is offloaded"
        Path(path).mkdir(parents=True, exist_ok=True)
        saved = {"w": float(self.weight.detach()), "step": self.step}
        (Path(path) / f"rank{self.rank}.json").write_text(json.dumps(saved))

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        saved = json.loads((Path(path) / f"rank{self.rank}.json").read_text())
        with torch.no_grad():
            self.weight.fill_(saved["w"])
        self.step = saved["step"]
        return saved


def metrics_logger(cfg: Config, enabled: bool = True) -> MetricsLogger:
    return MetricsLogger(cfg.logging, cfg.run_dir, cfg.run.name, cfg.trainer.total_steps, enabled=enabled)


def logged(cfg: Config) -> list[dict[str, float]]:
    path = cfg.run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
