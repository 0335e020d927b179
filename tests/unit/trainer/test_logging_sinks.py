"""Metrics reach JSONL, TensorBoard and W&B (offline, no network)."""

import json
import math

import pytest

from nemo_spatial.errors import ConfigError
from nemo_spatial.logging_sinks import LoggingConfig, MetricsLogger


def test_metrics_go_to_every_sink(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LoggingConfig(tensorboard=True, wandb_mode="offline", progress_bar=True)
    metrics = MetricsLogger(cfg, tmp_path, "unit", total_steps=2)
    metrics.log(1, {"reward/overall/mean": 0.25, "actor/kl": 0.0})
    metrics.log(2, {"reward/overall/mean": 0.5, "actor/kl": math.nan})
    metrics.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and lines[1]["reward/overall/mean"] == 0.5
    assert math.isnan(lines[1]["actor/kl"])  # a diverging value stays visible
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_disabled_logger_writes_nothing(tmp_path):
    metrics = MetricsLogger(LoggingConfig(), tmp_path / "other-rank", "unit", total_steps=1, enabled=False)
    metrics.log(1, {"x": 1.0})
    metrics.close()
    assert not (tmp_path / "other-rank").exists()


def test_bad_wandb_mode_is_named():
    with pytest.raises(ConfigError, match="logging.wandb_mode='cloud'"):
        LoggingConfig(wandb_mode="cloud")


def test_a_resumed_run_replaces_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = LoggingConfig(tensorboard=True, wandb_mode="disabled", progress_bar=False)
    first = MetricsLogger(cfg, tmp_path, "unit", total_steps=4)
    for step in (1, 2, 3):
        first.log(step, {"reward/overall/mean": step / 10})
    first.close()
    with (tmp_path / "metrics.jsonl").open("a") as cut_short:  # the crash hit mid-write
        cut_short.write('{"step": 4, "reward/ove')

    resumed = MetricsLogger(cfg, tmp_path, "unit", total_steps=4)
    resumed.resumed_at(2)  # the checkpoint of step 2: step 3 is trained again
    resumed.log(3, {"reward/overall/mean": 0.9})
    resumed.close()

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["reward/overall/mean"]) for line in lines] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("reward/overall/mean")
    assert [(e.step, round(e.value, 6)) for e in scalars] == [(1, 0.1), (2, 0.2), (3, 0.9)]
