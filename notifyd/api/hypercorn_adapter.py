"""The one place that touches hypercorn's internals.

The connection front (``server.py``) serves every connection that is not a new
stream with hypercorn's trio ``TCPServer``, handing it a stream wrapper (the
connection guard) instead of a socket. That is not hypercorn's public API (which
is ``serve()``, owning the listening socket), so what notifyd relies on is named
here and nowhere else, and ``tests/test_hypercorn_adapter.py`` checks it against
the installed hypercorn (signatures and attributes) so that an upgrade that
changes them fails loudly there instead of somewhere in a connection:

- ``hypercorn.config.Config``: the attributes set by :func:`make_config`;
- ``hypercorn.trio.tcp_server.TCPServer(app, config, context, state, stream)``,
  awaited to serve one connection; it reads ``stream.socket`` for the addresses;
- ``hypercorn.trio.worker_context.WorkerContext(max_requests)`` and its
  ``terminated`` event (graceful shutdown of kept-alive connections);
- ``hypercorn.typing.ConnectionState`` (the lifespan state shared by requests);
- ``hypercorn.utils.wrap_app(app, wsgi_max_body_size, mode)``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

__all__ = ["Config", "HypercornServer", "make_config"]


def make_config(
    *,
    keep_alive_timeout: float,
    graceful_timeout: float,
    head_limit: int,
    websocket_max_message_size: int,
    errorlog: logging.Logger,
) -> Config:
    """hypercorn's configuration for the front's connections. No read timeout: a
    stream served through the ASGI fallback never hears from its client; heads and
    bodies are timed by the connection guard, idle keep-alive connections close
    after ``keep_alive_timeout``."""
    cfg = Config()
    cfg.keep_alive_timeout = keep_alive_timeout
    cfg.read_timeout = None
    cfg.graceful_timeout = graceful_timeout
    cfg.accesslog = None
    cfg.errorlog = errorlog
    cfg.h11_max_incomplete_size = head_limit
    cfg.websocket_max_message_size = websocket_max_message_size
    cfg.include_server_header = False
    return cfg


class HypercornServer:
    """Serves single connections with hypercorn's HTTP/1.1 machinery (h11, its
    wsproto WebSockets, keep-alive) and an ASGI app."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.context = WorkerContext(None)
        self.state = ConnectionState({})

    async def serve(self, app: Any, stream: trio.abc.Stream) -> None:
        """Serve ``app`` on ``stream`` (which must have a ``socket`` attribute) until
        the connection ends."""
        wrapped = wrap_app(app, self.config.wsgi_max_body_size, "asgi")
        await TCPServer(wrapped, self.config, self.context, self.state, stream)  # type: ignore[arg-type]

    async def terminate(self) -> None:
        """Ask every connection to finish its request and close."""
        await self.context.terminated.set()
