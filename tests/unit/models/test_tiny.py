"""The tiny Qwen2.5-VL checkpoint: deterministic, complete, and loadable by transformers, vLLM and Megatron-Bridge."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from nemo_spatial.models.tiny import TINY, build_tiny_qwen25_vl, main
from nemo_spatial.models.tiny_tokenizer import SPECIAL_TOKENS

CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the red circle?"}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _image() -> Image.Image:
    image = Image.new("RGB", (200, 150), (240, 240, 240))
    image.paste((220, 30, 30), (20, 30, 80, 90))
    return image


def test_checkpoint_has_the_files_of_a_real_one(tiny_model_dir: Path) -> None:
    for name in CHECKPOINT_FILES:
        assert (tiny_model_dir / name).is_file(), name
    config = json.loads((tiny_model_dir / "config.json").read_text())
    text = config["text_config"]
    assert config["model_type"] == "qwen2_5_vl"
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (128, 2, 2)
    assert text["num_key_value_heads"] == 2 and text["vocab_size"] == TINY.vocab_size
    assert text["rope_parameters"]["mrope_section"] == [8, 12, 12]
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == text["hidden_size"] // text["num_attention_heads"]
    assert config["vision_config"]["depth"] == 2 and config["vision_config"]["out_hidden_size"] == 128


def test_same_seed_gives_identical_files_and_another_seed_other_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = build_tiny_qwen25_vl(tmp_path / "again", seed=0)
    for name in CHECKPOINT_FILES:
        assert _digest(again / name) == _digest(tiny_model_dir / name), name
    other = build_tiny_qwen25_vl(tmp_path / "other", seed=1)
    assert _digest(other / "model.safetensors") != _digest(tiny_model_dir / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny_model_dir / "tokenizer.json")


def test_cli_writes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert '"mrope_section": [8, 12, 12]' in capsys.readouterr().out


def test_tokenizer_round_trips_and_keeps_special_tokens_whole(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tokenizer) == TINY.vocab_size
    ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    assert ids == list(range(TINY.vocab_size - len(SPECIAL_TOKENS), TINY.vocab_size))
    text = '<observe>x</observe>\n<scene>{"objects":[{"id":"circle.1","bbox":[1,2,3,4]}]}</scene>\n(a) BEHIND ünï 中文'
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    for token in ("<|im_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert tokenizer(token)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_is_qwen25_vl(tiny_model_dir: Path) -> None:
    from transformers import AutoProcessor

    prompt = _prompt(AutoProcessor.from_pretrained(tiny_model_dir))
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Where is the red circle?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_transformers_loads_and_generates_from_image_and_text(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(images=[_image()], text=[_prompt(processor)], return_tensors="pt")
    grid = inputs["image_grid_thw"][0]
    assert grid.tolist() == [1, 150 // 14 // 2 * 2, 200 // 14 // 2 * 2]  # 140 x 196 pixels after rounding to 28
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4 == inputs["pixel_values"].shape[0] // 4
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 6)


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from PIL import Image
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    def main():
        model_dir, image_path = sys.argv[1], sys.argv[2]
        llm = LLM(model=model_dir, dtype="float32", max_model_len=1024, enforce_eager=True, seed=0,
                  limit_mm_per_prompt={"image": 1}, gpu_memory_utilization=0.1, kv_cache_memory_bytes=64 * 2**20)
        processor = AutoProcessor.from_pretrained(model_dir)
        content = [{"type": "image"}, {"type": "text", "text": "Where is the red circle?"}]
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        request = {"prompt": prompt, "multi_modal_data": {"image": Image.open(image_path).convert("RGB")}}
        out = llm.generate([request], SamplingParams(max_tokens=6, temperature=0.0))[0]
        print("RESULT " + json.dumps({"prompt_ids": list(out.prompt_token_ids), "ids": list(out.outputs[0].token_ids)}))

    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.slow
def test_vllm_cpu_generates_the_same_greedy_tokens_as_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    image_path = tmp_path / "image.png"
    _image().save(image_path)
    script = tmp_path / "run_vllm.py"
    script.write_text(VLLM_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(image_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[0][len("RESULT ") :])

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(images=[Image.open(image_path).convert("RGB")], text=[_prompt(processor)], return_tensors="pt")
    assert result["prompt_ids"] == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert result["ids"] == out[0, inputs["input_ids"].shape[1] :].tolist()
