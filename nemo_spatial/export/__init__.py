"""Hugging Face export of policy checkpoints, the parts without Megatron: which checkpoint, the checks made before
anything is written, the files copied from the base model, the sharded safetensors writer and the model card.

The Megatron side (load a checkpoint of any layout, convert through Megatron-Bridge) is
`nemo_spatial.models.qwen25_vl.hf_export`; the command is `python tools/megatron_to_hf.py`.
"""
