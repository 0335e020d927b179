"""Data: STVQA-7K (hub, local parquet) and synthetic STVQA-format readers, prompt building, image processing.

    from nemo_spatial.data import DataConfig, PromptStream
    stream = PromptStream.open(cfg.data, "train", processor_path=model_dir)
    batch = stream.next_batch(8)     # PromptSample: raw_prompt_ids + image for vLLM, input_ids/pixel_values/
                                     # image_grid_thw for the policy, ground_truth + problem for the reward
    light = PromptStream.open(cfg.data, "train", processor_path=model_dir, pixels=False)  # no pixel_values:
    own = PixelPreparer(model_dir)(prompts_by_index)  # ... each rank prepares those of its own rows

Heavy libraries (transformers, datasets, torch workers) load lazily, on first use.
"""

from nemo_spatial.data.config import DataConfig
from nemo_spatial.data.dataset import DataError, PromptStream
from nemo_spatial.data.processing import PixelPreparer, PromptSample, SampleError
from nemo_spatial.data.schema import DataSchemaError
from nemo_spatial.data.sources import DataSourceError

__all__ = [
    "DataConfig",
    "DataError",
    "DataSchemaError",
    "DataSourceError",
    "PixelPreparer",
    "PromptSample",
    "PromptStream",
    "SampleError",
]
