"""Prompt streams: shuffled, resumable batches of processed prompts, made in parallel worker processes.

    stream = PromptStream.open(cfg.data, "train", processor_path=cfg.policy.hf_path)
    batch = stream.next_batch(512)          # list[PromptSample]; bad rows skipped, counted and logged
    state = stream.state_dict()             # {"epoch", "offset", "seed", "num_rows", "source"}: into the checkpoint
    stream.load_state_dict(state)           # a resumed run continues with the very next row
    for sample in PromptStream.open(cfg.data, "val", processor_path=...).one_pass(): ...

What it computes: epoch e visits every row once, in the order `numpy.random.default_rng([seed, e]).permutation(N)`
(file order when shuffle is off), epochs follow each other without end. The position is the number of rows
the trainer has consumed (rows a worker prepared ahead of time are not counted), so a checkpoint taken
between batches resumes exactly. Rows are decoded and processed by `torch.utils.data.DataLoader` workers
(`data.num_workers` processes started by `data.worker_start_method`, one torch thread each, living as long as
the stream's iterator; 0 processes in place). The workers keep `data.prefetch_samples` samples ready ahead of
the trainer, so with it >= the batch size the next batch is prepared while the current step runs.
A row that cannot be used is a `SampleError`: skipped, counted per kind in `stats`, logged (the first 10 of
each kind, then every 100th). A full pass without one usable row stops with the most common error.
Departure from upstream: upstream shuffles with the torch sampler's generator and re-draws each epoch from
its state; the order here is a pure function of (seed, epoch), which is what makes resuming exact and cheap.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nemo_spatial.data.config import DataConfig
from nemo_spatial.data.processing import PromptProcessor, PromptSample, SampleError
from nemo_spatial.data.sources import DataSourceError, load_rows

logger = logging.getLogger(__name__)


class DataError(RuntimeError):
    """The data cannot feed the run (no usable row, or a checkpoint from other data)."""


class PromptRows(Dataset):
    """Map-style view: index -> PromptSample or SampleError (for the DataLoader workers)."""

    def __init__(self, rows: Any, processor: PromptProcessor) -> None:
        self.rows = rows
        self.processor = processor

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PromptSample | SampleError:
        row = self.rows[index : index + 1].to_pylist()[0]
        return self.processor(index, row)


class _OrderSampler(Sampler[int]):
    """Row indices from (epoch, offset) on, through every later epoch (or to the end of one pass)."""

    def __init__(self, stream: PromptStream, epoch: int, offset: int, one_pass: bool) -> None:
        self.stream, self.epoch, self.offset, self.one_pass = stream, epoch, offset, one_pass

    def __iter__(self) -> Iterator[int]:
        epoch, offset = self.epoch, self.offset
        while True:
            yield from (int(i) for i in self.stream.order(epoch)[offset:])
            if self.one_pass:
                return
            epoch, offset = epoch + 1, 0


def _identity(sample: Any) -> Any:
    return sample


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the workers are the parallelism; intra-op threads would oversubscribe the cores


class PromptStream:
    def __init__(self, rows: Any, processor: PromptProcessor, cfg: DataConfig, source: str, shuffle: bool) -> None:
        if len(rows) == 0:
            raise DataSourceError(f"data source {source} has no rows")
        self.dataset = PromptRows(rows, processor)
        self.cfg, self.source, self.shuffle = cfg, source, shuffle
        self.num_rows = len(rows)
        self.epoch = 0
        self.offset = 0
        self.stats: Counter[str] = Counter()
        self._iterator: Iterator[Any] | None = None
        self._orders: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, cfg: DataConfig, split: str, processor_path: str, pixels: bool = True) -> PromptStream:
        """The train (shuffled) or val (file order) stream of a DataConfig; `pixels=False`: samples without
        pixel_values (a data.PixelPreparer makes them where they are trained on; see data/processing.py)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {split!r}")
        spec = cfg.train_files if split == "train" else cfg.val_files
        if not spec:
            raise DataSourceError(f"data.{split}_files is empty")
        rows = load_rows(spec, cfg)
        processor = PromptProcessor(cfg, processor_path, pixels=pixels)
        processor.load()  # a bad model path fails here, at once (workers load their own copy)
        return cls(rows, processor, cfg, spec, shuffle=cfg.shuffle and split == "train")

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            rng = np.random.default_rng([self.cfg.seed, epoch])
            self._orders[epoch] = rng.permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
        return self._orders[epoch]

    def _loader(self, epoch: int, offset: int, one_pass: bool) -> Iterator[Any]:
        workers = self.cfg.num_workers
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=_OrderSampler(self, epoch, offset, one_pass),
            num_workers=workers,
            collate_fn=_identity,
            prefetch_factor=max(1, -(-self.cfg.prefetch_samples // workers)) if workers else None,
            worker_init_fn=_worker_init if workers else None,
            multiprocessing_context=self.cfg.worker_start_method if workers else None,
        )
        return iter(loader)

    def _account(self, item: PromptSample | SampleError) -> PromptSample | None:
        if isinstance(item, SampleError):
            self.stats[f"skipped_{item.kind}"] += 1
            count = self.stats[f"skipped_{item.kind}"]
            if count <= 10 or count % 100 == 0:
                logger.warning("data %s: %s (%d %s rows skipped so far)", self.source, item.message, count, item.kind)
            return None
        self.stats["samples"] += 1
        if item.truncated_tokens:
            self.stats["truncated"] += 1
            if self.stats["truncated"] <= 10 or self.stats["truncated"] % 100 == 0:
                logger.warning("data %s: row %d truncated by %d tokens", self.source, item.row, item.truncated_tokens)
        return item

    def next_batch(self, size: int) -> list[PromptSample]:
        """The next `size` usable prompts; the position advances past every row consumed (skipped ones too)."""
        if self._iterator is None:
            self._iterator = self._loader(self.epoch, self.offset, one_pass=False)
        batch: list[PromptSample] = []
        failures: list[SampleError] = []
        while len(batch) < size:
            item = next(self._iterator)
            self.offset += 1
            if self.offset == self.num_rows:
                self.epoch, self.offset = self.epoch + 1, 0
            sample = self._account(item)
            if sample is not None:
                batch.append(sample)
                failures.clear()
                continue
            failures.append(item)
            if len(failures) >= self.num_rows:
                self._raise_unusable(failures)
        return batch

    def one_pass(self) -> Iterator[PromptSample]:
        """Every usable row once, in this stream's epoch-0 order (file order for val); the position is untouched."""
        failures: list[SampleError] = []
        for item in self._loader(0, 0, one_pass=True):
            sample = self._account(item)
            if sample is None:
                failures.append(item)
            else:
                yield sample
        if len(failures) == self.num_rows:
            self._raise_unusable(failures)

    def _raise_unusable(self, failures: list[SampleError]) -> None:
        kind, count = Counter(f.kind for f in failures).most_common(1)[0]
        example = next(f for f in failures if f.kind == kind)
        raise DataError(
            f"data {self.source}: {len(failures)} rows in a row could not be used ({count} of kind {kind!r}); "
            f"e.g. {example.message}"
        )

    def metrics(self) -> dict[str, float]:
        return {f"data/{key}": float(value) for key, value in self.stats.items()} | {"data/epoch": float(self.epoch)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.cfg.seed,
            "num_rows": self.num_rows,
            "shuffle": self.shuffle,
            "source": self.source,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the data, seed and shuffle must be those it was saved with."""
        if state.get("num_rows") != self.num_rows:
            raise DataError(
                f"the checkpoint's data position is for {state.get('num_rows')} rows of {state.get('source')!r}, "
                f"but {self.source!r} has {self.num_rows}: resume with the same data.train_files"
            )
        if state.get("seed") != self.cfg.seed or state.get("shuffle", self.shuffle) != self.shuffle:
            raise DataError(
                f"the checkpoint was taken with data.seed={state.get('seed')} shuffle={state.get('shuffle')}; "
                f"this run has data.seed={self.cfg.seed} shuffle={self.shuffle}: set them back to resume the order"
            )
        if not (0 <= int(state["offset"]) < self.num_rows and int(state["epoch"]) >= 0):
            raise DataError(f"invalid data position epoch={state['epoch']} offset={state['offset']}")
        self.close()
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])

    def close(self) -> None:
        """Stop the workers (a new iterator starts at the current position on the next batch)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
