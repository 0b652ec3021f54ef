"""Run notifyd with faults injected into the dependencies of each door's handler.

``python tests/faultinject.py serve …`` is ``notifyd serve …`` in which a few
functions the handlers call raise ``RuntimeError("injected fault …")`` when the
request carries the marker ``boom``; every other request is served as usual.
tests/test_guard.py starts the daemon this way (``Daemon(command=…)``) to show that
an exception nobody expected ends one connection, never the process. Nothing of
this is in notifyd itself: the patches are applied here, before the CLI runs.

Markers, by door:

- ``/v1/stream`` and ``/v1/stream/sse`` (fast path and ASGI fallback): ``topics=boom``
  fails while the stream is opened (before any answer); ``topics=boom-later`` fails
  inside the running session, after the handshake went out.
- ntfy ``/<topics>/json|sse|raw|ws``: a topic named ``boom``.
- publishing (``POST /v1/events``, ntfy ``PUT/POST /<topic>``, Gotify
  ``POST /message``): an event titled ``boom``.
- a FastAPI route (``GET /v1/events``): ``?topic=boom``.
- Gotify's ``/stream`` WebSocket: the header ``X-Boom: 1``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

MARKER = "boom"


class InjectedFault(RuntimeError):
    pass


def fault(where: str) -> InjectedFault:
    return InjectedFault(f"injected fault in {where}")


def _wrap(module: Any, name: str, check: Callable[..., bool]) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    async def faulty(*args: Any, **kw: Any) -> Any:
        if check(*args, **kw):
            raise fault(f"{module.__name__}.{name}")
        return await original(*args, **kw)

    setattr(module, name, faulty)


def _titled_boom(payload: Any) -> bool:
    items = payload if isinstance(payload, list) else [payload]
    return any(isinstance(p, dict) and p.get("title") == MARKER for p in items)


def install() -> None:
    from notifyd.api import rawstream, streams
    from notifyd.api.compat import gotify, ntfy, ntfy_stream
    from notifyd.api.routes import stream as asgi_stream
    from notifyd.core import inbox

    # notifyd's streams: opening one (both transports import the name)
    for module in (streams, rawstream, asgi_stream):
        _wrap(module, "open_session", lambda *a, **kw: kw.get("topics") == MARKER)

    # ... and a session that fails once it runs (after the 101 / 200 went out)
    original_run = streams.StreamSession.run

    async def run(self: streams.StreamSession, sink: Any) -> None:
        if self.topics == ("boom-later",):
            self.close()
            raise fault("StreamSession.run")
        await original_run(self, sink)

    streams.StreamSession.run = run  # type: ignore[method-assign]

    # ntfy's subscriptions (raw fast path and the FastAPI routes)
    def ntfy_boom(*args: Any, **kw: Any) -> bool:
        return MARKER in kw.get("topics_str", "").split(",")

    for module in (ntfy_stream, ntfy):
        _wrap(module, "open_subscription", ntfy_boom)

    # publishing on every door goes through inbox.publish
    _wrap(inbox, "publish", lambda svc, principal, payload, *a, **kw: _titled_boom(payload))

    # a FastAPI route: the history
    _wrap(inbox, "history", lambda svc, query: query.topic == MARKER)

    # Gotify's stream, before its handshake
    _wrap(gotify, "authenticate", lambda conn, need: conn.headers.get("x-boom") is not None)


def main() -> None:
    install()
    from notifyd.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
