"""The served model `reward_model`: its tensors, and the checks between a v2 request and the scorer.

NeMo-Aligner's remote reward model (PyTriton, `@batch`) takes `sentences` (BYTES, one per sample, shape [B, 1])
and answers `rewards` (FP32, shape [B, 1]). Token ids cannot carry an image-grounded ground truth, so this model
adds two inputs and reports every component:

    inputs   sentences     BYTES [B] or [B, 1]   the decoded responses
             ground_truth  BYTES same shape      the dataset's answer_option_text
             problem       BYTES same shape      the prompt (holds `Image size: (W x H)`)
             preset        BYTES 1 or B values   optional; the server's configured preset when absent
             upstream_exact BOOL 1 or B values   optional; upstream's spatialthinker value exactly (mciou not
                                                 floored at 0); the server's reward.upstream_exact when absent
    outputs  rewards (the overall reward), format, count, accuracy, spatial: FP32, shape of `sentences`
             errors        BYTES, shape of `sentences`: '' when the sample was scored, else why it was not

A sample that cannot be scored (say, a prompt without an image size) gets reward 0 and its message in `errors`;
the request still succeeds. A request that breaks these rules is answered 400 with what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nemo_spatial.reward.batch import PRESETS
from nemo_spatial.reward.kserve import InferRequest, ProtocolError, Tensor

SAMPLE_INPUTS = ("sentences", "ground_truth", "problem")
PRESET_INPUT = "preset"
UPSTREAM_EXACT_INPUT = "upstream_exact"
OPTIONAL_INPUTS = (PRESET_INPUT, UPSTREAM_EXACT_INPUT)
# Output tensor -> RewardResult field; `rewards` is Aligner's name for the overall reward.
SCORE_OUTPUTS = {
    "rewards": "overall",
    "format": "format",
    "count": "count",
    "accuracy": "accuracy",
    "spatial": "spatial",
}
ERRORS_OUTPUT = "errors"
OUTPUTS = (*SCORE_OUTPUTS, ERRORS_OUTPUT)
VERSION = "1"


@dataclass
class ScoringRequest:
    """The samples of one request as columns, and which preset scores which run of them."""

    responses: list[str]
    ground_truths: list[str]
    problems: list[str]
    segments: list[tuple[str, bool, int, int]]  # (preset, upstream_exact, start, stop), covering [0, B) in order
    shape: tuple[int, ...]  # of `sentences`; every output has it

    def __len__(self) -> int:
        return len(self.responses)


@dataclass
class Scores:
    """Scorer output for B samples: `values[k]` is the k-th SCORE_OUTPUTS column (float32), errors '' if fine."""

    values: np.ndarray  # (len(SCORE_OUTPUTS), B) float32
    errors: list[str]


def parse_request(
    request: InferRequest, default_preset: str, max_batch_size: int, default_upstream_exact: bool = False
) -> ScoringRequest:
    """The samples of a v2 request; ProtocolError naming the input and the fix when it breaks the model's rules."""
    known = (*SAMPLE_INPUTS, *OPTIONAL_INPUTS)
    for name in request.inputs:
        if name not in known:
            raise ProtocolError(f"unknown input {name!r}; reward_model takes {', '.join(known)}")
    missing = [name for name in SAMPLE_INPUTS if name not in request.inputs]
    if missing:
        raise ProtocolError(f"missing input(s) {', '.join(missing)}; reward_model needs {', '.join(SAMPLE_INPUTS)}")
    columns = [_bytes_column(request.inputs[name]) for name in SAMPLE_INPUTS]
    shape = request.inputs["sentences"].shape
    for name in SAMPLE_INPUTS:
        tensor = request.inputs[name]
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise ProtocolError(f"input {name!r} has shape {list(tensor.shape)}; use [B] or [B, 1], one per sample")
        if tensor.shape != shape:
            raise ProtocolError(
                f"inputs disagree on the batch: sentences has shape {list(shape)}, {name} {list(tensor.shape)}"
            )
    batch = len(columns[0])
    if batch > max_batch_size:
        raise ProtocolError(
            f"batch of {batch} samples is over this server's limit of {max_batch_size} "
            "(reward_service.server.max_batch_size); send smaller batches",
            status=413,
        )
    presets = _presets(request.inputs.get(PRESET_INPUT), batch, default_preset)
    exact = _upstream_exact(request.inputs.get(UPSTREAM_EXACT_INPUT), batch, default_upstream_exact)
    return ScoringRequest(columns[0], columns[1], columns[2], _segments(list(zip(presets, exact, strict=True))), shape)


def _bytes_column(tensor: Tensor) -> list[str]:
    if tensor.datatype != "BYTES":
        raise ProtocolError(f"input {tensor.name!r} must be BYTES (UTF-8 text), got {tensor.datatype}")
    assert isinstance(tensor.data, list)  # the codec decodes every BYTES tensor to a list of str
    return tensor.data


def _presets(tensor: Tensor | None, batch: int, default_preset: str) -> list[str]:
    if tensor is None:
        return [default_preset] * batch
    presets = _bytes_column(tensor)
    if len(presets) not in (1, batch):
        raise ProtocolError(f"input 'preset' has {len(presets)} values; send 1 (for all) or one per sample ({batch})")
    for value in set(presets):
        if value not in PRESETS:
            raise ProtocolError(f"input 'preset' is {value[:40]!r}; use one of: {', '.join(PRESETS)}")
    return presets * batch if len(presets) == 1 else presets


def _upstream_exact(tensor: Tensor | None, batch: int, default: bool) -> list[bool]:
    if tensor is None:
        return [default] * batch
    if tensor.datatype != "BOOL" or not isinstance(tensor.data, np.ndarray):
        raise ProtocolError(f"input 'upstream_exact' must be BOOL (true or false), got {tensor.datatype}")
    values = [bool(value) for value in tensor.data]
    if len(values) not in (1, batch):
        raise ProtocolError(
            f"input 'upstream_exact' has {len(values)} values; send 1 (for all) or one per sample ({batch})"
        )
    return values * batch if len(values) == 1 else values


def _segments(modes: list[tuple[str, bool]]) -> list[tuple[str, bool, int, int]]:
    """Runs of samples that share (preset, upstream_exact), in order."""
    segments, start = [], 0
    for i in range(1, len(modes) + 1):
        if i == len(modes) or modes[i] != modes[start]:
            segments.append((*modes[start], start, i))
            start = i
    return segments


def requested_outputs(request: InferRequest) -> tuple[list[str], set[str]]:
    """The outputs the request asked for (all when it named none), and which of them go as binary data."""
    wanted = request.outputs or []
    names = [output.name for output in wanted] or list(OUTPUTS)
    for name in names:
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}; reward_model has {', '.join(OUTPUTS)}")
    binary = set(names) if request.binary_output else set()
    for output in wanted:
        if output.binary is not None:
            (binary.add if output.binary else binary.discard)(output.name)
    return names, binary


def build_outputs(names: list[str], scoring: ScoringRequest, scores: Scores) -> list[Tensor]:
    tensors = []
    for name in names:
        if name == ERRORS_OUTPUT:
            tensors.append(Tensor(name, "BYTES", scoring.shape, scores.errors))
        else:
            column = scores.values[list(SCORE_OUTPUTS).index(name)]
            tensors.append(Tensor(name, "FP32", scoring.shape, column))
    return tensors


def model_metadata(
    model_name: str, default_preset: str, similarity: str, max_batch_size: int, upstream_exact: bool = False
) -> dict[str, Any]:
    """`GET /v2/models/<name>`: the v2 metadata, plus `parameters` saying how this server scores."""
    return {
        "name": model_name,
        "versions": [VERSION],
        "platform": "nemo_spatial",
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [-1, 1]} for name in (*SAMPLE_INPUTS, PRESET_INPUT)]
        + [{"name": UPSTREAM_EXACT_INPUT, "datatype": "BOOL", "shape": [-1, 1]}],
        "outputs": [
            {"name": name, "datatype": "BYTES" if name == ERRORS_OUTPUT else "FP32", "shape": [-1, 1]}
            for name in OUTPUTS
        ],
        "parameters": {
            "default_preset": default_preset,
            "default_upstream_exact": upstream_exact,
            "presets": list(PRESETS),
            "similarity": similarity,
            "max_batch_size": max_batch_size,
            "optional_inputs": list(OPTIONAL_INPUTS),
        },
    }


def model_config(model_name: str, max_batch_size: int) -> dict[str, Any]:
    """`GET /v2/models/<name>/config`: Triton's model configuration, which PyTriton's clients read."""

    def tensor(name: str, data_type: str, optional: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "data_type": data_type, "dims": [1]}
        return entry | {"optional": True} if optional else entry

    return {
        "name": model_name,
        "backend": "nemo_spatial",
        "max_batch_size": max_batch_size,
        "input": [tensor(name, "TYPE_STRING") for name in SAMPLE_INPUTS]
        + [tensor(PRESET_INPUT, "TYPE_STRING", True), tensor(UPSTREAM_EXACT_INPUT, "TYPE_BOOL", True)],
        "output": [tensor(name, "TYPE_STRING" if name == ERRORS_OUTPUT else "TYPE_FP32") for name in OUTPUTS],
        "dynamic_batching": {},
        "instance_group": [{"kind": "KIND_CPU"}],
    }
