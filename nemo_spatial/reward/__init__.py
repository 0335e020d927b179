"""Scene-graph (`spatialthinker`) and baseline (`r1v`) rewards: pure functions, a batch API, a CLI.

from nemo_spatial.reward import RewardScorer, RewardSample
batch = RewardScorer("spatialthinker", similarity="trigram").score_batch([RewardSample(resp, gt, prompt)])
batch.results[0].overall, batch.results[0].error
"""

from nemo_spatial.reward.batch import (
    COMPONENTS,
    PRESETS,
    BatchResult,
    RewardResult,
    RewardSample,
    RewardScorer,
)

__all__ = ["COMPONENTS", "PRESETS", "BatchResult", "RewardResult", "RewardSample", "RewardScorer"]
