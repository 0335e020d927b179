"""Metrics reach JSONL, TensorBoard and W&B (offline, no network)."""

import json
import math

import pytest

from nemo_spatial.config import ConfigError
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
