"""What notifyd relies on in hypercorn's internals (``notifyd/api/hypercorn_adapter.py``).

The connection front serves connections with hypercorn's trio ``TCPServer``, which is
not hypercorn's public API. These tests fail loudly when a hypercorn upgrade changes
what the adapter uses: the signatures and attributes it relies on, and (end to end,
in-process) one connection served through the adapter on a stream wrapper that is
not a socket — the connection guard, as the front hands it over — with two
pipelined keep-alive requests and a graceful termination.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from notifyd.api import hypercorn_adapter
from notifyd.api.hypercorn_adapter import HypercornServer, make_config
from notifyd.api.server import _Guard
from notifyd.config import Config as NotifydConfig


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_tcp_server_is_built_from_app_config_context_state_stream_and_awaited() -> None:
    assert _params(TCPServer.__init__) == ["self", "app", "config", "context", "state", "stream"]
    assert hasattr(TCPServer, "__await__"), "TCPServer(...) is awaited to serve a connection"
    source = inspect.getsource(TCPServer)
    # the addresses come from stream.socket; a stream without do_handshake is plain TCP
    assert "self.stream.socket" in source, "TCPServer no longer reads stream.socket"
    assert "do_handshake" in source and "AttributeError" in source


def test_worker_context_and_its_terminated_event() -> None:
    assert _params(WorkerContext.__init__) == ["self", "max_requests"]
    context = WorkerContext(None)
    assert inspect.iscoroutinefunction(context.terminated.set)
    assert inspect.iscoroutinefunction(context.terminated.wait)
    assert not context.terminated.is_set()


def test_wrap_app_and_connection_state() -> None:
    assert _params(wrap_app) == ["app", "wsgi_max_body_size", "mode"]
    assert ConnectionState({"a": 1}) == {"a": 1}


def test_every_config_attribute_the_adapter_sets_exists() -> None:
    """``Config`` takes any attribute silently: a renamed one would just be ignored."""
    default = Config()
    cfg = make_config(
        keep_alive_timeout=7, graceful_timeout=3, head_limit=1234,
        websocket_max_message_size=4321, errorlog=logging.getLogger("t"),
    )  # fmt: skip
    source = inspect.getsource(make_config)
    set_names = {line.split("cfg.", 1)[1].split("=", 1)[0].strip()
                 for line in source.splitlines() if line.strip().startswith("cfg.")}  # fmt: skip
    assert set_names >= {"keep_alive_timeout", "read_timeout", "h11_max_incomplete_size"}
    for name in set_names:
        assert name in vars(default) or hasattr(type(default), name), f"Config has no {name}"
    assert (cfg.keep_alive_timeout, cfg.graceful_timeout) == (7, 3)
    assert cfg.h11_max_incomplete_size == 1234 and cfg.websocket_max_message_size == 4321
    assert cfg.read_timeout is None and cfg.accesslog is None
    assert cfg.include_server_header is False
    assert isinstance(cfg.wsgi_max_body_size, int)  # passed to wrap_app
    assert isinstance(cfg.ssl_handshake_timeout, int | float)  # read by TCPServer.run


def test_hypercorn_internals_are_imported_by_the_adapter_only() -> None:
    import pathlib

    root = pathlib.Path(hypercorn_adapter.__file__).resolve().parent.parent
    users = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "from hypercorn" in p.read_text() or "import hypercorn" in p.read_text()
    )
    assert users == ["api/hypercorn_adapter.py"], users


async def _app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    body = f"{scope['method']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.mark.trio
async def test_a_guarded_connection_served_through_the_adapter() -> None:
    cfg = make_config(
        keep_alive_timeout=30, graceful_timeout=5, head_limit=16384,
        websocket_max_message_size=65536, errorlog=logging.getLogger("t"),
    )  # fmt: skip
    server = HypercornServer(cfg)
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    served = trio.Event()

    async def serve_one() -> None:
        conn = await listener.accept()
        # the front read the first bytes already: the guard replays them
        first = await conn.receive_some(5)
        guard = _Guard(conn, first, NotifydConfig(), trio.current_time() + 10)
        guard.phase = "idle"  # between requests as far as the guard's timers go
        await server.serve(_app, guard)
        served.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        async with client:
            await client.send_all(
                b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            data = b""
            with trio.fail_after(10):
                while b"GET /two" not in data:
                    chunk = await client.receive_some(65536)
                    assert chunk, f"closed early: {data!r}"
                    data += chunk
            assert data.count(b"HTTP/1.1 200 ") == 2, data
            assert data.index(b"GET /one") < data.index(b"GET /two")
            # graceful termination closes an idle kept-alive connection
            await server.terminate()
            with trio.fail_after(10):
                while await client.receive_some(65536):
                    pass
                await served.wait()
        await listener.aclose()
