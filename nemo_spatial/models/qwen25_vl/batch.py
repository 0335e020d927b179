"""Moved: the training batch is model-neutral and lives in `nemo_spatial.batch` (kept importable from here)."""

from nemo_spatial.batch import MicroBatch, PolicyBatch, make_micro_batches, scatter_rows

__all__ = ["MicroBatch", "PolicyBatch", "make_micro_batches", "scatter_rows"]
