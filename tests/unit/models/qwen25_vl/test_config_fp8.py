"""Policy / optimizer / FP8 configuration: validation with the fix in the message, and the FP8 fields."""

from __future__ import annotations

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.models.qwen25_vl.config import FP8Config, OptimizerConfig, PolicyConfig
from nemo_spatial.models.qwen25_vl.fp8 import check_fp8_supported, fp8_fields, resolved_dtype_name


def test_defaults_are_the_upstream_recipe() -> None:
    cfg = load_config(None, []).policy
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.clip_grad) == (1e-6, 0.01, 1.0)
    assert cfg.optimizer.decay_biases_and_norms  # upstream decays every parameter
    assert (cfg.optimizer.adam_beta1, cfg.optimizer.adam_beta2, cfg.optimizer.lr_schedule) == (0.9, 0.999, "constant")
    assert not cfg.freeze_vision_model and not cfg.fp8.enabled and cfg.reference == "cpu"


def test_precision_auto_is_bf16_on_gpu_and_fp32_on_cpu() -> None:
    assert resolved_dtype_name(PolicyConfig(), gpu=True) == "bf16"
    assert resolved_dtype_name(PolicyConfig(), gpu=False) == "fp32"
    assert resolved_dtype_name(PolicyConfig(precision="bf16"), gpu=False) == "bf16"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16"}, "policy.precision='fp16' must be one of: auto, bf16, fp32"),
        ({"micro_batch_size": 0}, "policy.micro_batch_size=0 must be >= 1"),
        ({"temperature": 0.0}, "policy.temperature=0.0 must be > 0"),
        ({"reference": "gpu"}, "policy.reference='gpu' must be one of: cpu, none"),
        ({"precision": "fp32", "fp8": FP8Config(enabled=True)}, "set policy.precision=bf16"),
        (
            {
                "fp8": FP8Config(enabled=True, param_gather=True),
                "optimizer": OptimizerConfig(use_distributed_optimizer=False),
            },
            "use_distributed_optimizer=true or policy.fp8.param_gather=false",
        ),
    ],
)
def test_policy_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PolicyConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr=0.0 must be > 0"),
        ({"min_lr": 1.0}, "min_lr=1.0 must be in \\[0, lr=1e-06\\]"),
        ({"adam_beta2": 1.0}, "adam_beta2=1.0 must be in \\[0, 1\\)"),
        ({"lr_schedule": "step"}, "lr_schedule='step' is not a schedule; use one of: constant, linear, cosine"),
        ({"lr_schedule": "cosine", "lr_decay_steps": 0}, "set policy.optimizer.lr_decay_steps to the number"),
        ({"clip_grad": -1.0}, "clip_grad=-1.0 must be >= 0"),
    ],
)
def test_optimizer_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OptimizerConfig(**kwargs)


def test_yaml_override_reaches_the_nested_fp8_config() -> None:
    cfg = load_config(None, ["policy.precision=bf16", "policy.fp8.enabled=true", "policy.fp8.recipe=current"])
    assert cfg.policy.fp8.recipe == "tensorwise"  # "current" is Transformer Engine's name for tensorwise
    with pytest.raises(ConfigError, match="policy.fp8.recipe='mxfp4' is not an FP8 recipe"):
        load_config(None, ["policy.fp8.enabled=true", "policy.fp8.recipe=mxfp4"])


def test_fp8_fields_per_recipe() -> None:
    assert fp8_fields(FP8Config()) == {}
    delayed = fp8_fields(FP8Config(enabled=True, recipe="delayed", amax_history_len=16, param_gather=True))
    assert delayed == {
        "fp8": "hybrid",
        "fp8_recipe": "delayed",
        "fp8_margin": 0,
        "fp8_param_gather": True,
        "fp8_param": True,
        "fp8_amax_history_len": 16,
        "fp8_amax_compute_algo": "max",
    }
    blockwise = fp8_fields(FP8Config(enabled=True, recipe="blockwise", format="e4m3", amax_history_len=16))
    assert blockwise["fp8_recipe"] == "blockwise" and blockwise["fp8"] == "e4m3"
    assert blockwise["fp8_amax_history_len"] == 1  # scales come from the current tensor, not a history


def test_fp8_refuses_a_machine_that_cannot_run_it() -> None:
    fp8 = FP8Config(enabled=True, recipe="blockwise")
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU with Transformer Engine.*fp8.enabled=false"):
        check_fp8_supported(fp8, cuda_available=False, transformer_engine=False, capability=None)
    with pytest.raises(ConfigError, match=r"blockwise' needs Hopper \(compute capability 9.x\); this GPU has \(8, 9\)"):
        check_fp8_supported(fp8, cuda_available=True, transformer_engine=True, capability=(8, 9))
    with pytest.raises(ConfigError, match="needs Hopper"):
        check_fp8_supported(fp8, cuda_available=True, transformer_engine=True, capability=(10, 0))
    check_fp8_supported(fp8, cuda_available=True, transformer_engine=True, capability=(9, 0))
    tensorwise = FP8Config(enabled=True, recipe="tensorwise")
    check_fp8_supported(tensorwise, cuda_available=True, transformer_engine=True, capability=(8, 9))
    with pytest.raises(ConfigError, match="compute capability >= \\(8, 9\\)"):
        check_fp8_supported(tensorwise, cuda_available=True, transformer_engine=True, capability=(8, 0))
    check_fp8_supported(FP8Config(), cuda_available=False, transformer_engine=False, capability=None)
