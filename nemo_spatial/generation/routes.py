"""The HTTP routes this project adds to vLLM's OpenAI-compatible server (everything else is vLLM's own).

- POST /nemo/v1/generate: a batch of multimodal prompts, n samples each, returning token ids, per-token
  sampling log-probs, finish reasons and the weight version of every sample. vLLM's OpenAI routes take one
  prompt per call and no PIL images with pre-rendered prompts; this route submits the whole batch at once
  so the engine schedules it together. A prompt that cannot run (too long, image/placeholder mismatch,
  unreadable image) comes back as error rollouts; the rest of the batch goes on.
- POST /nemo/v1/weights/{init,start,update,finish}: vLLM's weight-update lifecycle (AsyncLLM
  `init_weight_transfer_engine`, `start_weight_update`, `update_weights`, `finish_weight_update`), wrapped
  so that a sync pauses the scheduler (waiting for in-flight requests), and its end resets the prefix and
  multimodal caches (stale KV / encoder outputs would otherwise be reused), records the version and
  resumes. vLLM's own /start_weight_update etc. need VLLM_SERVER_DEV_MODE, which also exposes arbitrary
  RPC; these do not.
- GET /nemo/v1/health: engine liveness, weight version, and whether the weights are whole.
- POST /nemo/v1/weights/digest: a hash of the workers' weights (tests compare syncs with it).
- POST /nemo/v1/sleep, /nemo/v1/wake_up: vLLM's sleep mode (placement=colocated) without vLLM's dev mode:
  sleep waits for in-flight requests, pauses the scheduler and (on CUDA, with --enable-sleep-mode) offloads
  the weights and discards the KV cache; wake_up restores both and resumes. vLLM's CPU build pauses and
  resumes but releases nothing (its CPU worker logs "sleep mode is not supported on CPU, ignore it").
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.engine_io import (
    check_request,
    error_rollouts,
    parse_version,
    request_seed,
    rollouts_from_output,
    to_engine_prompt,
    to_sampling_params,
    vision_token_ids,
)
from nemo_spatial.generation.types import GenerationRequest, Rollout
from nemo_spatial.generation.wire import decode_request, decode_sampling, encode_rollout

logger = logging.getLogger("nemo_spatial.generation.server")
router = APIRouter(prefix="/nemo/v1")
MAX_BATCH = 4096


@dataclass
class ServerState:
    """What the server knows about its weights, beside the engine."""

    version: int = 0
    consistent: bool = True
    syncing_version: int | None = None
    vision_ids: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    sleeping: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _state(request: Request) -> ServerState:
    state = getattr(request.app.state, "nemo", None)
    if state is None:
        state = request.app.state.nemo = ServerState(version=request.app.state.args.nemo_initial_version)
    return state


async def _ready(request: Request) -> tuple[Any, ServerState]:
    """The engine client and our state, setting the initial version on first use."""
    engine = request.app.state.engine_client
    state = _state(request)
    if not state.ready:
        async with state.lock:
            if not state.ready:
                await engine.update_weight_version(str(state.version))
                state.vision_ids = vision_token_ids(engine.get_tokenizer())
                state.ready = True
    return engine, state


def _error(status: HTTPStatus, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status.value)


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError as error:
        return _error(HTTPStatus.BAD_REQUEST, f"request body is not JSON: {error}")
    if not isinstance(body, dict):
        return _error(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
    return body


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    engine, state = await _ready(request)
    try:
        await engine.check_health()
    except Exception as error:  # noqa: BLE001 - any failure here means the engine is unusable
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"engine is dead: {error!r}")
    model_config = engine.model_config
    return JSONResponse(
        {
            "ok": True,
            "weight_version": state.version,
            "weights_consistent": state.consistent,
            "syncing_version": state.syncing_version,
            "model": str(model_config.model),
            "max_model_len": int(model_config.max_model_len),
            "dtype": str(model_config.dtype).removeprefix("torch."),
            "world_size": int(engine.vllm_config.parallel_config.world_size),
        }
    )


@router.post("/generate")
async def generate(request: Request) -> JSONResponse:
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    engine, state = await _ready(request)
    if state.syncing_version is not None:
        return _error(HTTPStatus.CONFLICT, f"weights are being updated to version {state.syncing_version}; retry")
    if not state.consistent:
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, "the last weight sync failed midway; push the weights again")
    if state.sleeping:
        return _error(HTTPStatus.CONFLICT, "the engine is asleep (placement=colocated); POST /nemo/v1/wake_up first")
    items = body.get("requests")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        return _error(HTTPStatus.BAD_REQUEST, f"'requests' must be a non-empty list of at most {MAX_BATCH} prompts")
    try:
        params = decode_sampling(body.get("sampling", {}))
    except ConfigError as error:
        return _error(HTTPStatus.BAD_REQUEST, str(error))
    version = state.version
    batch_id = uuid.uuid4().hex[:12]
    jobs = [
        _run_one(engine, state, item, index, params, f"nemo-{batch_id}-{index}", version)
        for index, item in enumerate(items)
    ]
    try:
        groups = await asyncio.gather(*jobs)
    except _EngineDead as dead:
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"engine died during generation: {dead}")
    rollouts = [rollout for group in groups for rollout in group]
    num_errors = sum(1 for group in groups if group and group[0].error is not None)
    return JSONResponse(
        {"weight_version": version, "num_errors": num_errors, "rollouts": [encode_rollout(r) for r in rollouts]}
    )


class _EngineDead(RuntimeError):
    pass


async def _run_one(
    engine: Any, state: ServerState, item: Any, index: int, params: Any, request_id: str, version: int
) -> list[Rollout]:
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    parsed, prompt_id, problem = decode_request(item, index)
    if parsed is None or problem is not None:
        return error_rollouts(prompt_id, params.n, problem or "invalid request", version)
    gen_request: GenerationRequest = parsed
    problem = check_request(gen_request, state.vision_ids)
    if problem is not None:
        return error_rollouts(prompt_id, params.n, problem, version)
    try:
        sampling = to_sampling_params(params, state.vision_ids, request_seed(params.seed, prompt_id, index))
        final = None
        async for output in engine.generate(to_engine_prompt(gen_request), sampling, request_id):
            final = output
    except EngineDeadError as error:
        raise _EngineDead(str(error)) from error
    except (VLLMClientError, ValueError, TypeError) as error:
        return error_rollouts(prompt_id, params.n, f"request {prompt_id!r}: {error}", version)
    if final is None:
        return error_rollouts(prompt_id, params.n, f"request {prompt_id!r}: the engine returned nothing", version)
    return rollouts_from_output(prompt_id, final, version)


@router.post("/sleep")
async def sleep(request: Request) -> JSONResponse:
    """Level 1: weights offloaded to host memory, KV cache discarded (the default); level 2: both discarded."""
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    level = body.get("level", 1)
    if level not in (1, 2):
        return _error(HTTPStatus.BAD_REQUEST, f"sleep level {level!r} must be 1 or 2")
    engine, state = await _ready(request)
    started = time.perf_counter()
    async with state.lock:
        await engine.sleep(level, "wait")
        state.sleeping = True
    return JSONResponse({"sleeping": True, "level": level, "seconds": time.perf_counter() - started})


@router.post("/wake_up")
async def wake_up(request: Request) -> JSONResponse:
    engine, state = await _ready(request)
    started = time.perf_counter()
    async with state.lock:
        awake = await engine.wake_up(None)
        state.sleeping = not awake
    return JSONResponse({"sleeping": state.sleeping, "seconds": time.perf_counter() - started})


@router.post("/weights/init")
async def weights_init(request: Request) -> JSONResponse:
    from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    engine, _ = await _ready(request)
    try:
        await engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=body.get("init_info", {})))
    except Exception as error:
        logger.exception("weight transfer init failed")
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"weight transfer init failed: {error}")
    return JSONResponse({"ok": True})


@router.post("/weights/start")
async def weights_start(request: Request) -> JSONResponse:
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    engine, state = await _ready(request)
    version = body.get("version")
    if not isinstance(version, int) or version < 0:
        return _error(HTTPStatus.BAD_REQUEST, f"'version' must be a non-negative integer, got {version!r}")
    if state.syncing_version is not None:
        # A trainer that died mid-sync left this behind; the new sync supersedes it.
        logger.warning("weight sync to version %s was abandoned; starting version %s", state.syncing_version, version)
    await engine.pause_generation(mode="wait", clear_cache=True)
    state.syncing_version = version
    state.consistent = False
    try:
        try:
            await engine.start_weight_update()
        except Exception as error:
            if "already active" not in str(error):
                raise
            # Close the abandoned session first: continuing it would load into layers it already processed.
            await engine.finish_weight_update()
            await engine.start_weight_update()
    except Exception as error:
        logger.exception("start_weight_update failed")
        await engine.resume_generation()
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"start_weight_update failed: {error}")
    return JSONResponse({"ok": True})


@router.post("/weights/update")
async def weights_update(request: Request) -> JSONResponse:
    from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    engine, state = await _ready(request)
    if state.syncing_version is None:
        return _error(HTTPStatus.CONFLICT, "no weight sync in progress; call /nemo/v1/weights/start first")
    try:
        await engine.update_weights(WeightTransferUpdateRequest(update_info=body.get("update_info", {})))
    except Exception as error:
        logger.exception("update_weights failed")
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"update_weights failed: {error}")
    return JSONResponse({"ok": True})


@router.post("/weights/finish")
async def weights_finish(request: Request) -> JSONResponse:
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    engine, state = await _ready(request)
    version = body.get("version")
    if state.syncing_version is None or version != state.syncing_version:
        return _error(
            HTTPStatus.CONFLICT, f"finish for version {version!r} but the sync in progress is {state.syncing_version!r}"
        )
    try:
        await engine.finish_weight_update(str(version))
        await engine.reset_prefix_cache()
        await engine.reset_mm_cache()
        await engine.reset_encoder_cache()
    except Exception as error:
        logger.exception("finish_weight_update failed")
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"finish_weight_update failed: {error}")
    finally:
        await engine.resume_generation()
    state.version = parse_version(await engine.get_weight_version())
    state.syncing_version = None
    state.consistent = True
    return JSONResponse({"ok": True, "weight_version": state.version})


@router.post("/weights/digest")
async def weights_digest(request: Request) -> JSONResponse:
    engine, state = await _ready(request)
    digests = await engine.collective_rpc("nemo_weight_digest")
    return JSONResponse({"weight_version": state.version, "digests": digests})
