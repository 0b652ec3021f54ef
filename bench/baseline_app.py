"""The yardstick for ``bench/publish.py``: a bare ASGI app on hypercorn's trio worker.

It reads the whole POST body and answers 201 with a small JSON object, doing no
validation, no storage and no fsync: the most a hypercorn-trio server can do per
request on this machine. ``GET`` answers 200 (used as the health check).

Run:  .venv/bin/python bench/baseline_app.py 127.0.0.1:8790
  or  .venv/bin/hypercorn --worker-class trio bench.baseline_app:app
"""

from __future__ import annotations

import sys
from typing import Any

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    status = 201 if scope["method"] == "POST" else 200
    body = b'{"id":%d,"status":"ok","received":%d}' % (status, size)
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8790"]
    # the same connection settings notifyd gives hypercorn (notifyd.api.server)
    config.keep_alive_timeout = 30.0
    config.read_timeout = 30.0
    config.accesslog = None
    config.include_server_header = False
    trio.run(serve, app, config)


if __name__ == "__main__":
    main()
