"""nemo-spatial: GRPO with dense scene-graph rewards for Qwen2.5-VL on Megatron-Core, vLLM and SLURM."""

__version__ = "0.1.0"
