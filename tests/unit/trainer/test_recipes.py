"""Every shipped recipe loads, validates, and differs from its base only where it says."""

from pathlib import Path

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.sft_config import load_sft_config

CONF = Path(__file__).resolve().parents[3] / "conf"
RECIPES = sorted(str(p) for p in CONF.glob("**/*.yaml") if p.parent.name != "cluster")  # cluster files: their schema
CLUSTERS = sorted(str(p) for p in (CONF / "cluster").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: Path(p).name)
def test_recipe_loads(path):
    # SFT recipes (and conf/sft.yaml, their section's defaults) load with the SFT schema, a superset.
    cfg = load_sft_config(path) if "sft" in Path(path).stem else load_config(path)
    assert cfg.trainer.prompts_per_step % cfg.trainer.prompts_per_update == 0


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: Path(p).name)
def test_cluster_file_loads(path):
    from nemo_spatial.launcher.cluster import load_cluster

    assert load_cluster(path).time_limit_s > 0


def test_spatialthinker_recipes_keep_upstream_hyperparameters(repo_root):
    for name in ("spatialthinker_qwen25vl3b_stvqa7k_1n4g_tp1", "spatialthinker_qwen25vl7b_stvqa7k_1n4g_tp2"):
        cfg = load_config(repo_root / f"conf/recipes/{name}.yaml")
        assert (cfg.trainer.prompts_per_step, cfg.trainer.prompts_per_update, cfg.generation.sampling.n) == (
            512,
            128,
            8,
        )
        assert (cfg.policy.optimizer.lr, cfg.algorithm.kl_coef, cfg.algorithm.clip_high) == (1e-6, 0.01, 0.3)
        assert cfg.reward.preset == "spatialthinker" and cfg.trainer.total_steps == 75


def test_vanilla_baselines_differ_only_in_reward_and_prompt(repo_root):
    base = load_config(repo_root / "conf/recipes/spatialthinker_qwen25vl3b_stvqa7k_1n4g_tp1.yaml")
    vanilla = load_config(repo_root / "conf/recipes/vanilla_grpo_qwen25vl3b_stvqa7k_1n4g_tp1.yaml")
    assert (vanilla.reward.preset, vanilla.data.prompt_format, vanilla.data.answer_key) == (
        "r1v",
        "r1v",
        "answer_option_text_only",
    )
    assert vanilla.algorithm == base.algorithm and vanilla.trainer == base.trainer
