"""The remote reward server: the scene-graph reward behind NeMo-Aligner's remote reward interface (KServe v2).

    python -m nemo_spatial.reward.serve [--config conf/base.yaml] [--host H] [--port P] [--workers N] [key=value ...]

Speaks the KServe v2 HTTP/REST protocol as Triton does, so `tritonclient.http` (and PyTriton's clients, which
read /config) work unchanged: GET /v2/health/live, /v2/health/ready, /v2, /v2/models/reward_model[/ready|/config],
POST /v2/models/reward_model/infer (also under /versions/1/). The model's tensors are in service_model.py.

How it runs: one uvicorn event loop (uvloop, httptools) parses and answers HTTP, JSON or binary tensor data
(kserve.py); scoring happens in `reward_service.server.workers` processes with dynamic batching (scoring_pool.py).
Requests are limited in size (413), malformed ones answered 400 with what is wrong, and the server stays up.
It binds 127.0.0.1 by default; a bearer token from $NEMO_SPATIAL_REWARD_TOKEN (reward_service.token_env) is
required on every route but the health checks when set, and binding another address without one is refused
unless reward_service.server.allow_unauthenticated=true. SIGTERM or Ctrl-C stops accepting connections, lets
the requests in flight finish (up to graceful_timeout_s), then stops the scoring processes.

Why not PyTriton (nvidia-pytriton 0.7.0, a real Triton server), measured on the 2-core CPU machine:
- it pins numpy<2, which breaks scipy 1.18 (the reward's assignment solver) and the rest of the stack; with
  numpy 2 forced in, its Python backend stub crashed deserializing BYTES inputs;
- its model callables run as threads of one Python process, so the pure-Python reward is bound to one core
  (a 4,096-response rollout: ~0.4-0.5 CPU-s all in that process, ~1.5-2x the wall time of this server's 2 scoring
  processes); using more cores means several processes attached through RemoteTriton;
- it needs libpython3.12.so on LD_LIBRARY_PATH and ~150 MB of Triton binaries.
The wire protocol is the same, which is what Aligner-style clients depend on.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import logging
import math
import os
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nemo_spatial.config import Config, load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.reward import kserve
from nemo_spatial.reward.scoring_pool import ScoringPool, WorkerCrashed
from nemo_spatial.reward.service_model import (
    VERSION,
    build_outputs,
    model_config,
    model_metadata,
    parse_request,
    requested_outputs,
)

logger = logging.getLogger("nemo_spatial.reward.serve")
DRAIN_FACTOR = 4  # an over-size body is read (and dropped) up to this many limits, so the client sees the 413
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(kserve.error_body(message), status, headers, media_type=kserve.JSON_CONTENT_TYPE)


class RewardServer:
    """The v2 routes around one ScoringPool; `app` is the ASGI application."""

    def __init__(self, cfg: Config, token: str | None = None, workers: int | None = None) -> None:
        self.cfg = cfg
        self.server_cfg = cfg.reward_service.server
        self.model_name = cfg.reward_service.model_name
        self.token = token
        count = workers or self.server_cfg.workers or len(os.sched_getaffinity(0))
        self.pool = ScoringPool(count, self.server_cfg.chunk_size, cfg.reward.similarity, cfg.reward.similarity_model)
        model_routes: list[tuple[str, Handler, str]] = [
            ("", self.metadata, "GET"),
            ("/ready", self.model_ready, "GET"),
            ("/config", self.config, "GET"),
            ("/infer", self.infer, "POST"),
        ]
        routes = [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self._guarded(self.server_metadata), methods=["GET"]),
        ]
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [Route(prefix + path, self._guarded(fn), methods=[method]) for path, fn, method in model_routes]
        self.app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={HTTPException: self._http_error, Exception: self._internal_error},
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.pool.start()
        logger.info(
            "reward server ready: model %s, preset %s, similarity %s, %d scoring processes %s",
            self.model_name,
            self.cfg.reward.preset,
            self.pool.similarity_name,
            self.pool.workers,
            self.pool.worker_pids,
        )
        yield
        logger.info("stopping the scoring processes (%d jobs, %d samples scored)", *self._counts())
        await self.pool.close()

    def _counts(self) -> tuple[int, int]:
        return self.pool.stats.jobs, self.pool.stats.samples

    def _guarded(self, handler: Handler) -> Handler:
        """The handler behind the bearer-token check and the model-name check."""

        async def guarded(request: Request) -> Response:
            if self.token is not None and not self._authorized(request):
                return _error(
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                    f"(the server reads it from ${self.cfg.reward_service.token_env})",
                    {"WWW-Authenticate": "Bearer"},
                )
            model = request.path_params.get("model")
            if model is not None and model != self.model_name:
                return _error(404, f"unknown model {model!r}; this server serves {self.model_name!r}")
            version = request.path_params.get("version")
            if version is not None and version != VERSION:
                return _error(404, f"model {model!r} has no version {version!r}; it has version {VERSION}")
            return await handler(request)

        return guarded

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.pool.ready else 503)

    async def model_ready(self, request: Request) -> Response:
        return await self.ready(request)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "nemo_spatial.reward", "version": "0.1.0", "extensions": ["binary_tensor_data"]})

    async def metadata(self, request: Request) -> Response:
        max_batch = self.server_cfg.max_batch_size
        body = model_metadata(self.model_name, self.cfg.reward.preset, self.pool.similarity_name, max_batch)
        return JSONResponse(body)

    async def config(self, request: Request) -> Response:
        return JSONResponse(model_config(self.model_name, self.server_cfg.max_batch_size))

    async def infer(self, request: Request) -> Response:
        if not self.pool.ready:
            return _error(503, "the scoring processes are not running yet; retry shortly")
        try:
            body = await self._read_body(request)
            parsed = kserve.decode_request(body, request.headers.get(kserve.HEADER_LENGTH))
            names, binary = requested_outputs(parsed)
            scoring = parse_request(parsed, self.cfg.reward.preset, self.server_cfg.max_batch_size)
            scores = await self.pool.score(scoring)
        except kserve.ProtocolError as error:
            logger.info("%d for %s: %s", error.status, _peer(request), error)
            return _error(error.status, str(error), {"Connection": "close"} if error.status == 413 else None)
        except WorkerCrashed as error:
            return _error(503, str(error))
        outputs = build_outputs(names, scoring, scores)
        content, headers = kserve.encode_response(self.model_name, VERSION, parsed.id, outputs, binary)
        return Response(content, 200, headers)

    async def _read_body(self, request: Request) -> bytes:
        """The body, decompressed; 413 past max_request_mb (after draining, so the client can read the 413)."""
        limit = self.server_cfg.max_request_bytes
        too_big = kserve.ProtocolError(
            f"request body is over the server's limit of {self.server_cfg.max_request_mb:g} MB "
            "(reward_service.server.max_request_mb); send smaller batches (reward_service.batch_size)",
            status=413,
        )
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise kserve.ProtocolError(f"Content-Length {declared[:40]!r} is not a number")
        if declared is not None and int(declared) > DRAIN_FACTOR * limit:
            raise too_big
        chunks, size = [], 0
        stream = request.stream()
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                async for chunk in stream:  # drop the rest, up to the drain cap
                    size += len(chunk)
                    if size > DRAIN_FACTOR * limit:
                        break
                raise too_big
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        return body if encoding == "identity" else _decompress(body, encoding, limit, too_big)

    async def _http_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return _error(404, f"no route {request.url.path!r}; the v2 routes are under /v2 (see /v2/models/...)")
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}")

    async def _internal_error(self, request: Request, error: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal server error: {type(error).__name__}: {error}")


def _decompress(body: bytes, encoding: str, limit: int, too_big: Exception) -> bytes:
    """gzip or deflate (zlib) bodies as tritonclient sends them, never inflating past `limit`."""
    wbits = {"gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None:
        raise kserve.ProtocolError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none", 415)
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise kserve.ProtocolError(f"request body is not valid {encoding} data ({error})") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise too_big
    if not inflater.eof:
        raise kserve.ProtocolError(f"request body ends inside its {encoding} stream (truncated?)")
    return data


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def main(argv: list[str] | None = None) -> int:
    import uvicorn  # the server's own dependency; the rest of the module imports without it

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = {"host": args.host, "port": args.port, "workers": args.workers}
    overrides = [f"reward_service.server.{key}={value}" for key, value in flags.items() if value is not None]
    try:
        cfg = load_config(args.config, [*args.overrides, *overrides])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    server_cfg, token_env = cfg.reward_service.server, cfg.reward_service.token_env
    token = (os.environ.get(token_env) or None) if token_env else None
    if token is None and not server_cfg.is_loopback() and not server_cfg.allow_unauthenticated:
        print(
            f"error: refusing to serve {server_cfg.host} without authentication: set ${token_env or 'TOKEN'} to a "
            "secret bearer token, or reward_service.server.allow_unauthenticated=true on a trusted network",
            file=sys.stderr,
        )
        return 2
    server = RewardServer(cfg, token)
    uvicorn_config = uvicorn.Config(
        server.app,
        host=server_cfg.host,
        port=server_cfg.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(server_cfg.graceful_timeout_s),
        backlog=4096,
        log_config=None,
    )
    logger.info(
        "serving %s on http://%s:%d (auth: %s)",
        server.model_name,
        server_cfg.host,
        server_cfg.port,
        "bearer token" if token else "none",
    )
    uvicorn.Server(uvicorn_config).run()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.reward.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML config (e.g. conf/base.yaml); defaults when omitted")
    parser.add_argument("--host", help="reward_service.server.host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="reward_service.server.port (default 5555)")
    parser.add_argument("--workers", type=int, help="scoring processes (default: one per available core)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. reward.similarity=trigram")
    return parser


if __name__ == "__main__":
    sys.exit(main())
