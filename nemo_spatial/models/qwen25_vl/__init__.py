"""Qwen2.5-VL under Megatron-Core through Megatron-Bridge: `policy.MegatronPolicy` is the trainer's interface.

Files: config.py (PolicyConfig, OptimizerConfig, FP8Config), bridge.py (HF checkpoint -> sharded Megatron model),
layer_spec.py (the CPU layer spec), batch.py (PolicyBatch, micro-batching), log_probs.py (vocab-parallel log-probs),
forward.py (pipeline schedules), optimizer.py (DDP, AdamW, guarded step), reference.py (the KL reference),
checkpoint.py (torch_dist checkpoints), fp8.py (precision and FP8 recipes). Megatron is imported lazily.
"""
