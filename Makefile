# The README's commands. Each builds .venv first when it is missing or stale (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup demo demo-reward serve-reward bench-reward-service bench-data bench-policy bench-generation bench-batch-flow bench-rollout-servers bench-async-rollouts test test-quick lint typecheck bench-reward lock clean

setup:
	@bash scripts/setup_env.sh

TINY_MODEL := outputs/tiny-qwen25-vl

# The main job on CPU, the whole method on the tiny offline Qwen2.5-VL and synthetic STVQA-format data:
# an SFT warm start (it learns the answer format), then SpatialThinker-recipe GRPO from it (Megatron policy
# over gloo, vLLM CPU server, weight sync every step, the scene-graph reward), each printing its rewards.
demo: setup $(TINY_MODEL)/config.json
	rm -rf outputs/tiny-cpu-sft outputs/tiny-cpu-demo
	$(PY) -m nemo_spatial.sft --config conf/debug/tiny_cpu_sft.yaml
	$(PY) -m nemo_spatial.train --config conf/debug/tiny_cpu_demo.yaml

$(TINY_MODEL)/config.json: | setup
	$(PY) -m nemo_spatial.models.tiny --out $(TINY_MODEL)

# The reward alone on the spec's worked examples (seconds).
demo-reward: setup
	$(PY) -m nemo_spatial.reward demo --config conf/base.yaml

test: setup lint typecheck
	$(PY) -m pytest -q --durations=40

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check nemo_spatial tests benchmarks tools launcher
	$(VENV)/bin/ruff format --check nemo_spatial tests benchmarks tools launcher

typecheck: setup
	$(VENV)/bin/mypy

bench-reward: setup
	$(PY) benchmarks/reward_throughput.py

bench-reward-service: setup
	$(PY) benchmarks/reward_service_load.py

bench-data: setup
	$(PY) benchmarks/data_throughput.py

bench-policy: setup
	$(PY) benchmarks/policy_cpu_step.py

bench-generation: setup
	$(PY) benchmarks/generation_sync.py

bench-rollout-servers: setup
	$(PY) benchmarks/rollout_servers.py

bench-batch-flow: setup
	$(PY) benchmarks/batch_flow.py

bench-async-rollouts: setup
	$(PY) benchmarks/async_rollouts.py

serve-reward: setup
	$(PY) -m nemo_spatial.reward.serve --config conf/base.yaml

# Re-resolve requirements/stack.lock from requirements/stack.in (needs PyPI).
lock:
	rm -rf /tmp/nemo-spatial-lock && $$(bash -c 'source scripts/setup_env.sh >/dev/null 2>&1; true'; echo python3.12) -m venv /tmp/nemo-spatial-lock
	PIP_FIND_LINKS= /tmp/nemo-spatial-lock/bin/pip install -q -r requirements/stack.in
	/tmp/nemo-spatial-lock/bin/pip freeze --exclude-editable | sort > requirements/stack.lock

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
