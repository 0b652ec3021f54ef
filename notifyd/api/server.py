"""Listening sockets and the connection front.

Every accepted connection is peeked at: a first request that opens a live stream
goes to the fast path (``rawstream.py``); everything else is handed, with the
bytes already read, to hypercorn's trio ``TCPServer`` running the FastAPI app.
The Unix socket gets an ASGI wrapper that marks its requests, so the API treats
them as the configured ``socket_user``; TCP clients cannot forge that mark.

This relies on ``hypercorn.trio.tcp_server.TCPServer(app, config, context, state,
stream)``, pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import logging
import os
import socket as stdsocket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from ..core.errors import NotifydError
from ..core.services import Services
from .auth import SOCKET_SCOPE_KEY
from .compat import ntfy
from .compat import ntfy_stream as ntfy_streams
from .fastpath import PublishFastPath
from .rawstream import RequestHead, http_error, parse_head, serve_raw_stream

log = logging.getLogger("notifyd.server")

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 10.0
STREAM_PREFIXES = (b"GET /v1/stream ", b"GET /v1/stream?", b"GET /v1/stream/sse")


class _Replay(trio.abc.Stream):
    """A stream that first returns bytes already read from ``inner``."""

    def __init__(self, inner: trio.SocketStream, prefix: bytes) -> None:
        self.inner = inner
        self.prefix = prefix
        self.socket = inner.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Listener:
    name: str  # "http" or "socket"
    sock: trio.socket.SocketType
    address: str


def hypercorn_config(svc: Services) -> HyperConfig:
    cfg = HyperConfig()
    cfg.keep_alive_timeout = svc.config.keep_alive_timeout
    # No read timeout: a stream served through the ASGI fallback never hears from
    # its client. Idle keep-alive connections still close after keep_alive_timeout.
    cfg.read_timeout = None
    cfg.graceful_timeout = svc.config.graceful_timeout
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("notifyd.http")
    cfg.h11_max_incomplete_size = HEAD_LIMIT
    cfg.websocket_max_message_size = 64 * 1024
    cfg.include_server_header = False
    return cfg


def _socket_app(app: Any) -> Callable[..., Awaitable[None]]:
    async def marked(scope: dict, receive: Any, send: Any) -> None:
        scope[SOCKET_SCOPE_KEY] = True
        await app(scope, receive, send)

    return marked


def bind_tcp(address: str) -> Listener:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET
    sock = stdsocket.socket(family, stdsocket.SOCK_STREAM)
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.setblocking(False)
    bound = sock.getsockname()
    return Listener("http", trio.socket.from_stdlib_socket(sock), f"{host}:{bound[1]}")


def bind_unix(path: Path, mode: int) -> Listener:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a previous run
        else:
            probe.close()
            raise OSError(f"another daemon is listening on {path}")
        finally:
            probe.close()
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(1024)
    sock.setblocking(False)
    return Listener("socket", trio.socket.from_stdlib_socket(sock), str(path))


def inherited_listeners() -> list[Listener] | None:
    """Sockets passed by systemd (``LISTEN_FDS``/``LISTEN_FDNAMES``), or None.

    Each descriptor is used by its name (``FileDescriptorName=`` in the socket
    unit): ``http`` is an HTTP listener (token or session required) and ``socket``
    the admin socket, which must be a Unix socket. A descriptor with another name
    (systemd's default is the socket unit's name) is an admin socket if it is a Unix
    socket and an HTTP listener otherwise. When descriptors are passed, nothing else
    is bound: the configured ``listen`` and ``socket`` are ignored.
    """
    if os.environ.get("LISTEN_PID") not in (None, str(os.getpid())):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count <= 0:
        return None
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    out = []
    for i in range(count):
        fd = 3 + i
        name = names[i] if i < len(names) and names[i] else ""
        try:
            sock = stdsocket.socket(fileno=fd)
        except OSError as exc:
            raise OSError(f"LISTEN_FDS: descriptor {fd} ({name or 'unnamed'}) is not a socket: "
                          f"{exc.strerror}") from None  # fmt: skip
        if sock.type != stdsocket.SOCK_STREAM:
            raise OSError(f"LISTEN_FDS: descriptor {fd} ({name or 'unnamed'}) is not a stream "
                          "socket (use ListenStream= in the socket unit)")  # fmt: skip
        unix = sock.family == stdsocket.AF_UNIX
        if name == "socket" and not unix:
            # the socket acts as the admin without credentials: never over TCP
            raise OSError(f"LISTEN_FDS: descriptor {fd} is named 'socket' (the admin socket) "
                          "but is not a Unix socket; name TCP listeners 'http'")  # fmt: skip
        if name not in ("http", "socket"):
            fallback = "socket" if unix else "http"
            log.info("descriptor %d named %r: used as %r (a %s socket)", fd, name, fallback,
                     "Unix" if unix else "TCP")  # fmt: skip
            name = fallback
        sock.set_inheritable(False)  # not passed on to the delivery worker
        sock.setblocking(False)
        addr = sock.getsockname()
        if unix:
            address = addr if isinstance(addr, str) and addr else f"fd {fd}"
        elif sock.family == stdsocket.AF_INET6:
            address = f"[{addr[0]}]:{addr[1]}"
        else:
            address = f"{addr[0]}:{addr[1]}"
        out.append(Listener(name, trio.socket.from_stdlib_socket(sock), address))
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return out


def _peer(stream: trio.SocketStream, via_socket: bool) -> str:
    if via_socket:
        return "local"
    try:
        return str(stream.socket.getpeername()[0])
    except (OSError, IndexError, TypeError):
        return "unknown"


class Front:
    """Accepts connections and routes each to the stream fast path or hypercorn."""

    def __init__(self, svc: Services, app: Any) -> None:
        self.svc = svc
        self.ntfy_reserved = ntfy.reserved_names(app)
        self.hconfig = hypercorn_config(svc)
        self.context = WorkerContext(None)
        app = PublishFastPath(app, svc)
        self.tcp_app = wrap_app(app, self.hconfig.wsgi_max_body_size, None)
        self.unix_app = wrap_app(_socket_app(app), self.hconfig.wsgi_max_body_size, None)
        self.state = ConnectionState({})

    async def handle(self, stream: trio.SocketStream, via_socket: bool) -> None:
        buf = b""
        head: RequestHead | None = None
        ntfy_stream = False
        try:
            # Only reading the request head is bounded by HEAD_TIMEOUT; a stream
            # that follows lives as long as its client.
            with trio.move_on_after(HEAD_TIMEOUT):
                while b"\r\n" not in buf and len(buf) < HEAD_LIMIT:
                    data = await stream.receive_some(HEAD_LIMIT)
                    if not data:
                        await stream.aclose()
                        return
                    buf += data
                ntfy_stream = ntfy_streams.fast_path_match(buf, self.ntfy_reserved)
                if ntfy_stream or buf.startswith(STREAM_PREFIXES):
                    while b"\r\n\r\n" not in buf and len(buf) < HEAD_LIMIT:
                        data = await stream.receive_some(HEAD_LIMIT)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" in buf:
                        head = parse_head(buf.split(b"\r\n\r\n", 1)[0])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.aclose()
            return
        except NotifydError as exc:
            with trio.move_on_after(5):
                await stream.send_all(http_error(exc))
            await stream.aclose()
            return
        if head is not None and ntfy_stream:
            try:
                await ntfy_streams.serve_raw(
                    self.svc, self.ntfy_reserved, stream, head, via_socket,
                    _peer(stream, via_socket),
                )  # fmt: skip
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                await stream.aclose()
            return
        if head is not None:
            try:
                await serve_raw_stream(self.svc, stream, head, via_socket)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                await stream.aclose()
            return
        app = self.unix_app if via_socket else self.tcp_app
        await TCPServer(app, self.hconfig, self.context, self.state, _Replay(stream, buf))  # type: ignore[arg-type]

    async def serve(
        self,
        listener: Listener,
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        via_socket = listener.name == "socket"
        trio_listener = trio.SocketListener(listener.sock)
        task_status.started()
        async with trio_listener:
            while True:
                try:
                    stream = await trio_listener.accept()
                except OSError as exc:
                    log.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                handler_nursery.start_soon(self.handle, stream, via_socket)

    async def terminate(self) -> None:
        """Ask hypercorn's connections to finish their request and close."""
        await self.context.terminated.set()
