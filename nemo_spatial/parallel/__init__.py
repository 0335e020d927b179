"""Parallelism for the Megatron policy: the layout config and its validation (config.py, layout.py), process groups
and Megatron parallel state for NCCL or gloo (state.py), the CPU mode for Megatron-Core's CUDA calls
(cpu_compat.py: `activate(cfg.parallel)`, called by each entry point), and a local multi-process launcher
(launch.py). Megatron is imported lazily, inside functions, so `nemo_spatial.parallel.config` imports without it."""
