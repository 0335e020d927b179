"""`data:` config section: where prompts come from, how they are built, and how images are processed.

Defaults are upstream SpatialThinker's (../../../shared/docs/upstream-facts.md): STVQA-7K from the hub, the
`problem` column as prompt, `answer_option_text` as the reward's ground truth, min/max pixels 512^2 / 2048^2,
prompts up to 6,144 tokens. The vanilla-GRPO baseline sets `prompt_format: r1v`,
`prompt_key: question_with_options`, `answer_key: answer_option_text_only` (as upstream's baseline script).

`train_files` / `val_files` accept (see sources.py):
  owner/name@split          a Hugging Face hub dataset (needs the hub; offline it fails with how to use a local copy)
  /path/dir@split           a local directory of `{split}-*.parquet` (also `dir/data/{split}-*.parquet`, a hub snapshot)
  /path/file.parquet        one parquet file
  synthetic:N[:SEED]@split  N rows of synthetic STVQA-format data (split train or val; seed 0 by default),
                            generated offline once into cache_dir (nemo_spatial.data.synth)
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_spatial.errors import ConfigError

PROMPT_FORMATS = ("spatialthinker", "r1v")
OVERLONG_POLICIES = ("filter", "truncate", "error")
START_METHODS = ("forkserver", "spawn", "fork")


@dataclass
class DataConfig:
    train_files: str = "hunarbatra/STVQA-7K@train"
    val_files: str = "hunarbatra/STVQA-7K@val"
    prompt_key: str = "problem"  # the column holding the prompt text (with its `<image>` marker)
    answer_key: str = "answer_option_text"  # the reward's ground truth
    image_key: str = "images"
    problem_key: str = "problem"  # the column the reward reads `Image size: (W x H)` from
    # spatialthinker: the prompt column as is (it holds the instruction);
    # r1v: upstream baseline's think/answer instruction first.
    prompt_format: str = "spatialthinker"
    # Overrides the instruction put before the prompt column (upstream `data.format_prompt`): the prompt becomes
    # `format_prompt.strip() + " " + row[prompt_key]`. Empty: the prompt_format's default (none for spatialthinker).
    format_prompt: str = ""
    min_pixels: int = 262144  # images smaller than this are scaled up (aspect kept), as upstream
    max_pixels: int = 4194304  # ... larger ones scaled down
    max_prompt_length: int = 6144  # tokens, image tokens included
    overlong: str = "filter"  # filter (skip, warn, count) | truncate (drop instruction text, warn) | error
    shuffle: bool = True
    seed: int = 1  # shuffle order of each epoch: permutation from (seed, epoch)
    num_workers: int = 2  # processes decoding and processing images; 0 = in the trainer's process
    # Samples the workers prepare ahead while the trainer is busy (the DataLoader's prefetch_factor x num_workers).
    # >= prompts per step (upstream 512) prepares the whole next batch during a step; each sample holds its
    # pixel patches (~6 MB at 512^2 pixels), so this bounds the memory too.
    prefetch_samples: int = 512
    # forkserver/spawn: safe in a process with threads (gloo, vLLM clients); fork starts fastest.
    worker_start_method: str = "forkserver"
    cache_dir: str = ""  # datasets' cache and generated synthetic data; empty: ~/.cache/nemo-spatial

    def __post_init__(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(
                f"data.prompt_format={self.prompt_format!r} is not known; use one of: {', '.join(PROMPT_FORMATS)}"
            )
        if self.overlong not in OVERLONG_POLICIES:
            raise ConfigError(
                f"data.overlong={self.overlong!r} is not known; use one of: {', '.join(OVERLONG_POLICIES)}"
            )
        for key in ("train_files", "prompt_key", "answer_key", "image_key", "problem_key"):
            if not getattr(self, key):
                raise ConfigError(f"data.{key} must not be empty")
        if self.prompt_format == "r1v" and self.prompt_key == "problem" and not self.format_prompt:
            raise ConfigError(
                "data.prompt_format=r1v puts its own instruction before the prompt, but data.prompt_key=problem "
                "already holds SpatialThinker's instruction; set data.prompt_key=question_with_options and "
                "data.answer_key=answer_option_text_only (upstream's vanilla-GRPO baseline)"
            )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ConfigError(
                f"data.min_pixels={self.min_pixels} and data.max_pixels={self.max_pixels} need 0 < min <= max "
                "(upstream 262144 and 4194304)"
            )
        if self.max_prompt_length <= 0:
            raise ConfigError(f"data.max_prompt_length={self.max_prompt_length} must be > 0 (upstream 6144)")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers} must be >= 0 (0 processes images in the trainer)")
        if self.worker_start_method not in START_METHODS:
            raise ConfigError(
                f"data.worker_start_method={self.worker_start_method!r} is not known; use one of: "
                f"{', '.join(START_METHODS)}"
            )
        if self.prefetch_samples < 1:
            raise ConfigError(
                f"data.prefetch_samples={self.prefetch_samples} must be >= 1 (upstream prompts per step: 512)"
            )
