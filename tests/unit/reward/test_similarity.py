"""Label-similarity backends: the offline trigram default, and spaCy on a vectors model built offline."""

import math
from collections import Counter

import numpy as np
import pytest

from nemo_spatial.reward import RewardSample, RewardScorer, similarity
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response
from nemo_spatial.reward.similarity import SpacySimilarity, TrigramSimilarity, make_similarity


def test_trigram_similarity():
    sim = TrigramSimilarity()
    assert sim("bike", "bike") == 1.0
    assert sim("bike", "man") == 0.0
    assert 0.5 < sim("chair", "chairs") < 1.0
    assert sim("fire hydrant", "hydrant") == pytest.approx(sim("hydrant", "fire hydrant"))
    assert sim("", "") == 1.0 and 0.0 <= sim("", "a") <= 1.0


def _reference_trigram_cosine(a, b):
    grams_a, grams_b = (Counter(f"  {x} "[i : i + 3] for i in range(len(x) + 1)) for x in (a, b))
    dot = sum(count * grams_b[gram] for gram, count in grams_a.items())
    return dot / math.sqrt(sum(c * c for c in grams_a.values()) * sum(c * c for c in grams_b.values()))


def _trigram_cache_sizes():
    return similarity._cached_trigram_cosine.cache_info().currsize, similarity._cached_trigrams.cache_info().currsize


def test_long_labels_score_the_same_without_growing_the_trigram_caches():
    sim = TrigramSimilarity()
    long_label = "chair " * 20 + "leg"  # longer than MAX_CACHED_LABEL_CHARS: a policy's runaway id
    assert len(long_label) > similarity.MAX_CACHED_LABEL_CHARS
    before = _trigram_cache_sizes()
    assert sim("chairs", long_label) == _reference_trigram_cosine("chairs", long_label)
    assert sim(long_label, "chairs") == _reference_trigram_cosine(long_label, "chairs")
    assert sim(long_label, long_label) == 1.0
    assert _trigram_cache_sizes() == before
    assert sim("chairs", "chair leg") == _reference_trigram_cosine("chairs", "chair leg")  # short: cached
    assert _trigram_cache_sizes() > before


class _ReferenceTrigram:
    name = "reference"

    def __call__(self, gt_label, pred_label):
        return 1.0 if gt_label == pred_label else _reference_trigram_cosine(gt_label, pred_label)


def _with_object_id(object_id):
    scene = {"objects": [{"id": object_id, "bbox": [0, 272, 310, 451]}, {"id": "man.1", "bbox": [0, 165, 38, 278]}]}
    return RewardSample(response(scene), GROUND_TRUTH, PROBLEM)


def test_long_predicted_ids_score_as_before_without_growing_the_caches():
    scorer = RewardScorer("spatialthinker", "trigram")
    scorer.score_one(_with_object_id("bike" * 40 + ".1"))  # caches the short labels' pairs
    before = _trigram_cache_sizes()
    sample = _with_object_id("bicycle" * 40 + ".1")
    result = scorer.score_one(sample)
    assert _trigram_cache_sizes() == before
    assert result == RewardScorer("spatialthinker", _ReferenceTrigram()).score_one(sample)
    assert result.accuracy == 1.0 and 0.0 < result.spatial < 1.0


@pytest.fixture(scope="module")
def vectors_model(tmp_path_factory):
    """A spaCy pipeline with four word vectors, saved to disk: the spaCy path without a download."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    vectors = {"man": [1.0, 0.1, 0.0], "person": [0.9, 0.3, 0.0], "bike": [0.0, 1.0, 0.2], "bicycle": [0.0, 0.9, 0.3]}
    for word, vector in vectors.items():
        nlp.vocab.set_vector(word, np.asarray(vector, dtype=np.float32))
    path = tmp_path_factory.mktemp("spacy") / "tiny_vectors"
    nlp.to_disk(path)
    return str(path)


def test_spacy_backend_uses_vector_similarity(vectors_model):
    sim = SpacySimilarity(vectors_model)
    assert sim("man", "person") == pytest.approx(
        np.dot([1.0, 0.1, 0.0], [0.9, 0.3, 0.0]) / np.linalg.norm([1.0, 0.1, 0.0]) / np.linalg.norm([0.9, 0.3, 0.0]),
        rel=1e-5,
    )
    assert sim("bike", "bike") == pytest.approx(1.0, rel=1e-6)
    assert sim("zebra", "bike") == 0.0  # no vector: spaCy warns and returns 0, as upstream scored it


def test_spacy_long_labels_score_the_same_without_growing_the_doc_cache(vectors_model):
    sim = SpacySimilarity(vectors_model)
    long_label = "man " * 30 + "bike"
    expected = sim._nlp("person").similarity(sim._nlp(long_label))
    size = sim._cached_doc.cache_info().currsize
    assert sim("person", long_label) == pytest.approx(expected, rel=1e-6) and expected > 0.5
    assert sim._cached_doc.cache_info().currsize == size + 1  # "person" only


def test_spacy_similarity_decides_matching_but_not_the_score(vectors_model):
    """'bicycle' and 'person' are matched to bike and man by meaning; the score is still the box mciou."""
    synonyms = response(
        {
            "objects": [{"id": "person.1", "bbox": [0, 165, 38, 278]}, {"id": "bicycle.1", "bbox": [0, 272, 310, 451]}],
            "relationships": [{"subject": "person.1", "predicate": "behind", "object": "bicycle.1"}],
        }
    )
    spacy_result = RewardScorer("spatialthinker", SpacySimilarity(vectors_model)).score_one(
        RewardSample(synonyms, GROUND_TRUTH, PROBLEM)
    )
    assert spacy_result.spatial == pytest.approx(0.9999981, abs=1e-7)  # exact boxes, matched by meaning


def test_missing_spacy_model_says_how_to_fix():
    with pytest.raises(RuntimeError, match="reward.similarity=trigram"):
        SpacySimilarity("/nonexistent/spacy-model")


def test_auto_falls_back_to_trigram_without_the_model():
    assert make_similarity("auto", "/nonexistent/spacy-model").name == "trigram"
    with pytest.raises(ValueError, match="auto, spacy, trigram"):
        make_similarity("word2vec")
