from typing import ClassVar

import pytest


class _GradedSimilarity:
    """A similarity that, like spaCy's vectors, rates different labels above 0 (man~person, bike~bicycle)."""

    name = "graded"
    related: ClassVar[dict[frozenset[str], float]] = {
        frozenset(("man", "person")): 0.7,
        frozenset(("bike", "bicycle")): 0.8,
    }

    def __call__(self, gt_label: str, pred_label: str) -> float:
        if gt_label == pred_label:
            return 1.0
        return self.related.get(frozenset((gt_label, pred_label)), 0.2)


@pytest.fixture
def spacy_like_similarity():
    return _GradedSimilarity()
