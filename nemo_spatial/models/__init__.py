"""Model code: the tiny offline Qwen2.5-VL builder (tiny.py) and the Megatron Qwen2.5-VL (qwen25_vl/).

Only this package, `parallel/` and `generation/` import Megatron or vLLM, and lazily.
"""
