"""reward.serve's edges without a server process: shutdown answers, command-line errors (issue 13)."""

import asyncio
import json
import socket

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from nemo_spatial.cli import run_main
from nemo_spatial.errors import UserError
from nemo_spatial.reward.serve import ShutdownGuard, check_bindable, main, url_of


async def _call(app, cancel_after_s=None):
    """Run one POST through the ASGI app; cancel it (as uvicorn does when the grace period ends) if asked."""
    sent = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/reward_model/infer",
        "headers": [],
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 1),
        "http_version": "1.1",
    }

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    task = asyncio.ensure_future(app(scope, receive, send))
    if cancel_after_s is not None:
        await asyncio.sleep(cancel_after_s)
        task.cancel()
    await task
    return sent


async def _forever(request):
    await asyncio.Event().wait()


async def _quick(request):
    return Response(b"ok", 200)


def test_a_request_cut_off_by_shutdown_gets_a_retryable_v2_json_503():
    app = ShutdownGuard(Starlette(routes=[Route("/v2/models/reward_model/infer", _forever, methods=["POST"])]))
    start, body = asyncio.run(_call(app, cancel_after_s=0.05))
    assert start["status"] == 503 and (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body["body"])["error"].startswith("the reward server is shutting down; retry")


def test_an_answered_request_passes_through_unchanged():
    app = ShutdownGuard(Starlette(routes=[Route("/v2/models/reward_model/infer", _quick, methods=["POST"])]))
    start, body = asyncio.run(_call(app))
    assert start["status"] == 200 and body["body"] == b"ok"


def test_ipv6_any_is_read_as_an_address_and_needs_a_token(monkeypatch, capsys):
    monkeypatch.delenv("NEMO_SPATIAL_REWARD_TOKEN", raising=False)
    assert run_main(main, ["--host", "::", "--port", "5598"]) == 2  # `::` used to be parsed as a YAML mapping
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to serve :: without authentication") and err.count("\n") == 1


def test_a_config_mistake_is_one_line_and_status_2(capsys):
    assert run_main(main, ["reward.sample_time_budget_s=0"]) == 2
    assert capsys.readouterr().err == "error: reward.sample_time_budget_s=0.0 must be > 0\n"


def test_a_port_in_use_is_refused_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"cannot serve on http://127.0.0.1:{port}: .*reward_service.server.port"):
            check_bindable("127.0.0.1", port)


def test_an_unknown_host_is_refused_naming_the_key():
    with pytest.raises(UserError, match="reward_service.server.host='no-such-host.invalid' does not resolve"):
        check_bindable("no-such-host.invalid", 5598)


def test_urls_bracket_ipv6():
    assert url_of("::1", 5) == "http://[::1]:5" and url_of("127.0.0.1", 5) == "http://127.0.0.1:5"


def test_ipv6_any_is_bindable_where_the_machine_has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::", 0))
    except OSError:
        with pytest.raises(UserError, match=r"cannot serve on http://\[::\]:"):
            check_bindable("::", 5598)
        return
    check_bindable("::", 0)  # no error: `--host ::` (with a token) binds every IPv6 and IPv4 address
