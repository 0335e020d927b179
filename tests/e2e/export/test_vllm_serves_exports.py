"""vLLM (CPU build) serves the exports: one engine start, from the TP=2 export's directory; the TP=1 and PP=2
exports' tensors then go through the same weight-update path the trainer uses, by their file names.

Each time the served float32 prompt log-probs must match transformers' on the same export (what would fail: a
file or name vLLM cannot read, a tensor it lays out differently from transformers).
"""

from __future__ import annotations

import pytest
import torch

from nemo_spatial.generation import GenerationRequest, SamplingConfig
from tests.e2e.export.conftest import EXPORTED, export_dir
from tests.e2e.export.test_megatron_to_hf import exported_tensors
from tests.e2e.generation.conftest import CONTINUATION, TrainerModel, chat_prompt, e2e_config, make_image

# The session's runs and exports (conftest.py) are built in the setup of the first test that needs them: ~5 min on
# 2 idle cores, 10+ on a loaded machine, so the per-test limit (900 s, a hang guard) is raised for these.
pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.timeout(2400)]


def test_vllm_loads_each_export(export_runs, exports):
    from nemo_spatial.generation.inprocess import InProcessGenerator

    root, _ = export_runs
    generator = InProcessGenerator(e2e_config(mode="inprocess", on_server_death="stop"), str(export_dir(root, "tp2")))
    text = chat_prompt("Where is the car?") + CONTINUATION
    request = GenerationRequest("fixed", text, images=[make_image(3)])
    try:
        for version, name in enumerate(("tp2", "tp1", "pp2")):
            folder = export_dir(root, name)
            if version:
                generator.update_weights(iter(exported_tensors(folder).items()), version=version)
            reference = TrainerModel(folder)
            inputs = reference.inputs(text, [make_image(3)])
            (rollout,) = generator.generate([request], SamplingConfig(n=1, max_tokens=1, prompt_logprobs=True))
            assert rollout.ok and rollout.weight_version == version
            served = torch.tensor(rollout.prompt_logprobs[1:], dtype=torch.float32)
            diff = (served - reference.token_log_probs(inputs, 1)).abs().max().item()
            print(f"\n{name} export: vLLM fp32 prompt log-probs max |vLLM - transformers| = {diff:.3e}")
            assert diff < 1e-4, name
    finally:
        generator.close()
    assert set(EXPORTED) == {"tp1", "tp2", "pp2"}
