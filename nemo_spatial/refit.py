"""Weight sync ("refit"): the generator gets the policy's current weights, for the GRPO and the SFT loops alike.

    metrics = refit(policy, generator, collectives, version, max_restarts)   # every rank, at a step boundary

What it does: when the generator (on the driver) does not hold weight `version`, every rank walks the policy's
HF-named weight export (collective: Megatron gathers the shards) and the driver streams it into the generator.
A generation server restarted during the push (`GeneratorRestartedError`: it is back at version 0) is pushed
to again, up to `max_restarts` more times; the other ranks learn of it through `collectives.run_on_driver`, so
every rank walks the export the same number of times. The loops own the version numbers; this owns the push.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from nemo_spatial.generation.types import Generator, GeneratorRestartedError, SyncStats
from nemo_spatial.parallel.collectives import Collectives, DriverFailedError

if TYPE_CHECKING:
    import torch

    from nemo_spatial.contracts import Policy

logger = logging.getLogger(__name__)


def refit(
    policy: Policy, generator: Generator | None, collectives: Collectives, version: int, max_restarts: int
) -> dict[str, float]:
    """Push weight `version` unless the generator holds it; the push's metrics ({} when nothing was pushed)."""
    for _ in range(1 + max(max_restarts, 0)):
        current = collectives.run_on_driver(partial(_generator_version, generator))
        if current == version:
            return {}
        named = policy.named_hf_weights()
        if not collectives.is_driver:
            for _ in named:  # take part in the collective export
                pass
        stats = collectives.run_on_driver(partial(_push, generator, named, version))
        if stats is not None:
            return {
                "sync/seconds": stats.seconds,
                "sync/gb_per_s": stats.gb_per_s,
                "sync/bytes": float(stats.num_bytes),
            }
    raise DriverFailedError(f"weight version {version} could not reach the generator")


def _generator_version(generator: Generator | None) -> int:
    assert generator is not None, "the driver holds the generator"
    return generator.weight_version


def _push(generator: Generator | None, named: Iterator[tuple[str, torch.Tensor]], version: int) -> SyncStats | None:
    assert generator is not None, "the driver holds the generator"
    try:
        return generator.update_weights(named, version)
    except GeneratorRestartedError as error:
        for _ in named:  # finish the collective export the other ranks are in
            pass
        logger.error("weight sync of version %d: %s", version, error)
        return None
    except BaseException:
        # Any other failure still finishes the export first: with TP/PP > 1 the other ranks are inside its
        # gathers, and they would wait there (until the NCCL timeout) instead of hearing the driver's error.
        for _ in named:
            pass
        raise
