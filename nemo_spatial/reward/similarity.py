"""Label similarity for matching predicted objects to ground-truth objects.

The similarity enters only the matching cost, `2 * (1 - sim) + (1 - mciou)`; the spatial score itself is
the mciou of the matched pairs. So a backend decides WHICH boxes are paired, never how a pair scores.

Backends:
- `spacy`: upstream's choice, spaCy `en_core_web_md` word-vector cosine (`Doc.similarity`). The model is
  not on PyPI (spaCy ships it from GitHub), so it is used only where it is installed.
- `trigram` (the offline default): cosine similarity of character-trigram counts of the padded labels.
  Identical labels give exactly 1.0 as spaCy does, which decides every match in which the policy uses the
  ground truth's words (the common case, since the prompt names the objects). Labels that share no letters
  give 0 where spaCy gives a graded value ("man" vs "person" ~0.6); trigrams instead reward shared stems
  ("chair" vs "chairs" 0.67) that spaCy rates similarly. Both are symmetric and in [0, 1] for words, and
  the trigram one needs no download, so every machine computes the same number.
- `auto`: spacy when its model loads, else trigram; the chosen backend is logged and recorded with the run.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from functools import lru_cache
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_md"
# Predicted labels come from the policy, so their length is unbounded: only labels up to this many characters
# (object names are a few words) are cached, longer ones are computed afresh to the same value. Full, the
# trigram caches then hold about 60 MB per process (65,536 pairs of 64-char labels; they held gigabytes
# when a policy wrote kilobyte-long ids).
MAX_CACHED_LABEL_CHARS = 64
DOC_CACHE_SIZE = 8192  # spaCy docs of labels: ~7 KB each at the length cap, so ~60 MB when full


class LabelSimilarity(Protocol):
    name: str

    def __call__(self, gt_label: str, pred_label: str) -> float: ...


class TrigramSimilarity:
    """Cosine similarity of character-trigram count vectors of `"  label "`."""

    name = "trigram"

    def __call__(self, gt_label: str, pred_label: str) -> float:
        if _cacheable(gt_label) and _cacheable(pred_label):
            return _cached_trigram_cosine(gt_label, pred_label)
        return _trigram_cosine(gt_label, pred_label)


def _cacheable(label: str) -> bool:
    return len(label) <= MAX_CACHED_LABEL_CHARS


def _trigram_cosine(a: str, b: str) -> float:
    if a == b:
        return 1.0
    grams_a, grams_b = _trigrams(a), _trigrams(b)
    dot = sum(count * grams_b[gram] for gram, count in grams_a.items())
    norm = math.sqrt(sum(c * c for c in grams_a.values()) * sum(c * c for c in grams_b.values()))
    return dot / norm


# A pair's entry is a float; a label's trigram counts are ~4 KB at the length cap, so fewer of those are kept:
# the labels in use at once (a dataset's object names and the policy's) are far fewer than their pairs.
_cached_trigram_cosine = lru_cache(maxsize=65536)(_trigram_cosine)


def _trigrams(label: str) -> Counter[str]:
    return _cached_trigrams(label) if _cacheable(label) else _count_trigrams(label)


def _count_trigrams(label: str) -> Counter[str]:
    padded = f"  {label} "
    return Counter(padded[i : i + 3] for i in range(len(padded) - 2))


_cached_trigrams = lru_cache(maxsize=8192)(_count_trigrams)


class SpacySimilarity:
    """spaCy vector similarity of the label docs, as upstream (`nlp(a).similarity(nlp(b))`)."""

    name = "spacy"

    def __init__(self, model: str = SPACY_MODEL) -> None:
        import spacy  # optional: only this backend needs it

        try:
            self._nlp = spacy.load(model, disable=["parser", "ner", "tagger"])
        except OSError as error:
            raise RuntimeError(
                f"spaCy model {model!r} is not installed. Install it where the hub is reachable "
                f"(`python -m spacy download {model}`), point reward.similarity_model at a local model "
                "directory, or set reward.similarity=trigram for the offline default."
            ) from error
        self.model = model
        self._cached_doc = lru_cache(maxsize=DOC_CACHE_SIZE)(self._nlp)

    def __call__(self, gt_label: str, pred_label: str) -> float:
        with warnings.catch_warnings():
            # spaCy warns for labels without vectors and returns 0.0, as upstream scored them.
            warnings.simplefilter("ignore")
            return float(self._doc(gt_label).similarity(self._doc(pred_label)))

    def _doc(self, label: str) -> Any:
        return self._cached_doc(label) if _cacheable(label) else self._nlp(label)


def make_similarity(backend: str = "auto", model: str = SPACY_MODEL) -> LabelSimilarity:
    """The backend named in the config: `auto`, `spacy` or `trigram`."""
    if backend == "trigram":
        return TrigramSimilarity()
    if backend == "spacy":
        return SpacySimilarity(model)
    if backend == "auto":
        try:
            chosen: LabelSimilarity = SpacySimilarity(model)
        except (ImportError, RuntimeError):
            chosen = TrigramSimilarity()
        logger.info("label similarity backend: %s (reward.similarity=auto)", chosen.name)
        return chosen
    raise ValueError(f"unknown label similarity backend {backend!r}; use one of: auto, spacy, trigram")
