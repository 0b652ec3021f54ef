"""Listening sockets and the connection front.

Every accepted connection is peeked at: a first request that opens a live stream
(notifyd's ``/v1/stream`` and ``/v1/stream/sse``, ntfy's ``/<topics>/ws|json|sse|raw``,
Gotify's ``/stream`` WebSocket) has its head read by the raw transport
(``transport.py``: h11, then wsproto for WebSockets) and is served by its door on
the socket; everything else is handed, with the bytes already read, to hypercorn
(``hypercorn_adapter.py``) running the FastAPI app.
The Unix socket gets an ASGI wrapper that marks its requests, so the API treats
them as the configured ``socket_user``; TCP clients cannot forge that mark.

Every connection runs under a guard (:meth:`Front.handle`, and per request
:func:`_guarded_app`): an exception a handler did not expect ends that connection
only — it is logged in one line, answered 500 in the door's own error shape if no
answer has started, and the connection is closed — never the process. A request
with a large or chunked body is authenticated from its head before any of the
body is read (:data:`AUTH_FIRST_BYTES`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket as stdsocket
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..config import Config
from ..core.errors import NotifydError, PayloadTooLarge
from ..core.services import Services
from . import cors
from .auth import SOCKET_SCOPE_KEY, resolve
from .clientaddr import (
    client_address,
    set_proxy_identity,
    take_head_identity,
    with_client_address,
    with_proxy_identity,
)
from .compat import gotify, ntfy
from .compat import ntfy_stream as ntfy_streams
from .compat.ntfy_params import NtfyError
from .fastpath import PublishFastPath
from .hypercorn_adapter import Config as HyperConfig
from .hypercorn_adapter import HypercornServer, make_config
from .rawstream import serve_raw_stream
from .responses import (
    GOTIFY,
    INTERNAL_MESSAGE,
    NOTIFYD,
    NTFY,
    check_body_size,
    declared_length,
    door_of,
    render,
    render_notifyd,
    status_error,
)
from .transport import HEAD_LIMIT, MAX_CLIENT_MESSAGE, HeadReader, RequestHead, refuse

log = logging.getLogger("notifyd.server")

IMPORT_PATH = "/v1/admin/import"
#: A request may make the daemon read this much of its body before it is
#: authenticated (a sign-in, a small publish). A larger (or chunked) body is read
#: only once the credentials in the head check out; else 401 before any of it.
AUTH_FIRST_BYTES = 4 * 1024
#: the one notifyd route that reads a body without credentials: sign-in, small JSON
SIGN_IN_PATH = "/v1/session"
#: notifyd's upload route: its body may be as large as ``attachment_max_bytes``
ATTACHMENTS_PATH = "/v1/attachments"
#: a webhook's own URL (POST /v1/hooks/{id}[/{secret}]): the route checks the hook's
#: secret (in the path, a Bearer header or a signature over the body) itself
HOOKS_PREFIX = "/v1/hooks/"
#: a body that may be a file earns one more second of ``body_timeout`` for every this
#: many bytes it sends: a phone uploading a photo over a slow uplink finishes, a
#: slowloris trickling bytes does not (256 kbit/s is the floor)
UPLOAD_MIN_RATE = 32 * 1024
STREAM_PREFIXES = (b"GET /v1/stream ", b"GET /v1/stream?", b"GET /v1/stream/sse")
#: Gotify's stream: served on the raw transport when the head asks for a WebSocket
GOTIFY_STREAM_PREFIXES = (b"GET /stream ", b"GET /stream?")


def _timeout_response(what: str, seconds: float, headers: list[tuple[str, str]]) -> bytes:
    message = f"the request {what} took longer than {seconds:g} s"
    return render_notifyd(status_error(408, message, code="timeout"), headers=dict(headers)).raw()


def _cors_headers(config: Config, scope: dict) -> list[tuple[str, str]]:
    """The CORS headers (:mod:`.cors`) of an answer written here, outside
    :class:`.cors.CORSMiddleware` (a large body's early 401, the guard's 500, a body
    timeout): without them a page on a listed origin sees a network error instead
    of the status."""
    if not config.cors_origins or scope["type"] != "http" or not cors.applies(scope["path"]):
        return []
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    return cors.response_headers(config, origin)


# -- the connection guard ------------------------------------------------------------

#: how a connection normally ends: the client went away (not worth a log line)
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
#: credentials that could end up in an exception's message
_SECRET = re.compile(r"nfy_[A-Za-z0-9_\-]+|\b[AC][A-Za-z0-9_\-]{14}\b")
#: a webhook URL's secret (``/v1/hooks/{id}/{secret}``): never in a log line
_HOOK_SECRET = re.compile(r"(/v1/hooks/[^/\s?]+/)[^/\s?]+")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _culprit(exc: BaseException) -> BaseException | None:
    """The exception that ended a connection, or None when only the client left
    (every exception in the group is a transport error)."""
    return next((e for e in _leaves(exc) if not isinstance(e, _GONE)), None)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def failure_status(exc: BaseException, door: str, peer: str, what: str) -> NotifydError | NtfyError:
    """The error to answer for ``exc`` (in the door's dialect, :func:`.responses.render`).
    A domain error that escaped its handler is answered as what it is; anything else
    is a bug: logged here in one line (no body, headers, query or cookie: only the
    door, the peer, the method and path, and the exception) and answered 500."""
    if isinstance(exc, NotifydError | NtfyError):
        return exc
    message = _SECRET.sub("[token]", str(exc)).encode("unicode_escape").decode("ascii")
    what = _HOOK_SECRET.sub(r"\1…", what)
    message = _HOOK_SECRET.sub(r"\1…", message)
    log.error(
        "%s door: %s from %s failed: %s: %s (at %s); connection closed",
        door, what, peer, type(exc).__name__, message[:300], _where(exc),
    )  # fmt: skip
    return NotifydError(INTERNAL_MESSAGE)


class _Watched(trio.abc.HalfCloseableStream):
    """A raw-socket door's connection, noting whether an answer has begun (so that
    the guard knows whether it may still answer 500)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.socket = inner.socket  # a RawSink writes to it directly when it can
        self.answered = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.answered = True
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Guard(trio.abc.Stream):
    """The connection as hypercorn sees it: first the bytes the front already read,
    then the socket, read under the deadline of the request's current phase.

    A request's head must arrive within ``header_timeout`` of its first byte (of the
    connection's opening, for the first request), and its body within
    ``body_timeout`` of the head (a body that may be a file earns a second more for
    every :data:`UPLOAD_MIN_RATE` bytes that arrive); a client that misses one gets
    408 (if no answer has started) and is disconnected. Between requests the
    connection is idle (hypercorn's ``keep_alive_timeout``), and while the app serves a request without a body (a
    stream, a WebSocket) nothing is timed: the client owes nothing then.
    :func:`_guarded_app` tells the guard when a request's head has arrived, when its
    body has, and when it is over.

    Known gap: a head deadline starts when bytes arrive on an idle connection. Bytes
    of a pipelined next request that arrived earlier (with the previous request, or
    while it was served) sit in h11's buffer, and the guard cannot tell them from an
    idle connection; an incomplete pipelined head is then only ended by
    ``keep_alive_timeout``. The raw transport's h11 framing (``transport.py``) reads
    only the first head of a new connection; once a connection is handed over,
    hypercorn's h11 frames its requests, and telling where a request ends from here
    would take a second h11 parse of every request on this path (or reaching into
    hypercorn's protocol objects).
    """

    def __init__(self, inner: trio.SocketStream, prefix: bytes, config: Config,
                 deadline: float) -> None:  # fmt: skip
        self.inner = inner
        self.prefix = prefix
        self.socket = inner.socket
        self.config = config
        self.phase = "head"  # head | body | busy | idle | closed
        self.deadline = deadline
        self.responded = False
        #: the current request's path and method (which door answers a failure)
        self.path, self.method = "/", "GET"
        #: the CORS headers of a body timeout's answer to the current request
        self.cors: list[tuple[str, str]] = []
        #: the current body may be a file: it earns time as it arrives (UPLOAD_MIN_RATE)
        self.upload = False
        self._body_start = 0.0
        self._body_bytes = 0
        #: a send_all or send_eof is under way (hypercorn's close does not wait for
        #: the app's writes; see send_all)
        self._sending = False
        self._scope: trio.CancelScope | None = None

    def _set(self, phase: str, deadline: float = math.inf) -> None:
        self.phase, self.deadline = phase, deadline
        # Only a tighter deadline is pushed to a pending read at once. A later one
        # (the body arrived, the answer went out) is left lazy: should the old
        # deadline fire, receive_some sees the phase moved on and reads again. Every
        # deadline change of a waiting cancel scope costs trio heap work, and this
        # runs several times per request.
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    def request_started(self, has_body: bool) -> None:
        self.responded, self.upload = False, False
        if has_body:
            self._body_start, self._body_bytes = trio.current_time(), 0
            self._set("body", self._body_start + self.config.body_timeout)
        else:
            self._set("busy")

    def body_received(self) -> None:
        if self.phase == "body":
            self._set("busy")

    def request_done(self) -> None:
        if self.phase != "closed":
            self._set("idle")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        while self.phase != "closed":
            with trio.CancelScope(deadline=self.deadline) as scope:
                self._scope = scope
                try:
                    data = await self.inner.receive_some(max_bytes)
                finally:
                    self._scope = None
                if data and self.phase == "idle":  # the next request begins
                    self.responded = False
                    self._set("head", trio.current_time() + self.config.header_timeout)
                elif data and self.upload and self.phase == "body":
                    # a later deadline needs no push to a waiting scope (see _set)
                    self._body_bytes += len(data)
                    self.deadline = max(self.deadline, self._body_start
                                        + self.config.body_timeout
                                        + self._body_bytes / UPLOAD_MIN_RATE)  # fmt: skip
                return data
            if trio.current_time() < self.deadline:
                continue  # a stale deadline (see _set): the phase has moved on
            await self._time_out()
        return b""

    async def _time_out(self) -> None:
        phase = self.phase
        self._set("closed")
        if phase in ("head", "body") and not self.responded:
            what, seconds = (
                ("head", self.config.header_timeout) if phase == "head"
                else ("body", self.config.body_timeout)
            )  # fmt: skip
            if self._sending:
                return  # an answer is being written after all
            self._sending = True
            with trio.move_on_after(2):
                try:
                    cors_headers = self.cors if phase == "body" else []
                    await self.inner.send_all(_timeout_response(what, seconds, cors_headers))
                    await self.inner.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            self._sending = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.phase == "closed":
            raise trio.ClosedResourceError("the request timed out")
        if self._sending:
            # hypercorn is closing the connection (send_eof, below) while the app
            # still writes (its WebSocket's client broke the protocol): the app's
            # write fails as a closed connection, not as trio's BusyResourceError
            raise trio.ClosedResourceError("the connection is closing")
        self._sending = True
        try:
            await self.inner.send_all(data)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._sending:
            return  # a write is under way; the aclose() that follows ends the connection
        self._sending = True
        try:
            await self.inner.send_eof()
        finally:
            self._sending = False

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _drain(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _authenticate_first(
    svc: Services, scope: dict, reserved: frozenset[str]
) -> list[dict] | None:
    """Before a large body is read: the answer refusing the request if its head
    carries no valid credentials, else None.

    notifyd's routes (FastAPI reads and parses a body before any dependency runs)
    are checked here with :func:`.auth.resolve`, which caches tokens and sessions, so
    the route's own check then costs a dictionary lookup. ntfy's and Gotify's
    handlers authenticate from the head before they read (``ntfy_publish.publish``,
    ``gotify.authenticate``), in their own shapes and with their own credentials
    (Basic with a password, ``?auth=``, ``X-Gotify-Key``): they are left to do it,
    once."""
    path, method = scope["path"], scope["method"]
    # ntfy's and Gotify's doors (the ntfy account API included) and the hooks' URLs
    # authenticate themselves, in their own shapes
    if door_of(path, method, reserved) != NOTIFYD or path.startswith(HOOKS_PREFIX):
        return None
    if path == SIGN_IN_PATH:  # anonymous by nature: only a small body is read
        exc: NotifydError = PayloadTooLarge(f"a sign-in body is at most {AUTH_FIRST_BYTES} bytes")
    else:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            await resolve(svc, False, headers.get("authorization"), method=method, headers=headers)
            return None
        except NotifydError as err:
            exc = err
    return render_notifyd(exc, close=True).asgi()


def may_carry_file(path: str, method: str, reserved: frozenset[str]) -> bool:
    """Whether a request's body may be a file: ``POST /v1/attachments``, ntfy's
    ``PUT``/``POST /<topic>``."""
    if method not in ("PUT", "POST"):
        return False
    if path == ATTACHMENTS_PATH:
        return True
    return door_of(path, method, reserved) == NTFY and not path.startswith(("/v1/", "/file/"))


def body_limit(config: Config, carries_file: bool) -> int:
    """The most body a request may send: ``max_request_bytes``, or for one that may
    carry a file ``attachment_max_bytes`` when that is larger. The routes check the
    file's own limit and quota; this one only ends a body too large for either."""
    if carries_file:
        return max(config.max_request_bytes, config.attachment_max_bytes)
    return config.max_request_bytes


async def _request_failed(
    scope: dict, send: Any, exc: BaseException, reserved: frozenset[str], started: bool
) -> None:
    """The per-request guard: ``exc`` escaped the app. Answer in the door's shape
    if nothing was sent yet; else leave the connection to hypercorn, which closes a
    response that did not end (and a WebSocket with 1011)."""
    culprit = _culprit(exc)
    if culprit is None:
        return
    path, method = scope.get("path", "/"), scope.get("method", "GET")
    door = door_of(path, method, reserved)
    client = scope.get("client")
    peer = str(client[0]) if client else "local"
    failure = failure_status(culprit, door, peer, f"{method} {path}")
    if started:
        return
    # a WebSocket refused before its handshake gets a denial response
    answer = render(door, failure, close=True).asgi(websocket=scope["type"] == "websocket")
    try:
        for message in answer:
            await send(message)
    except Exception:  # noqa: BLE001 - hypercorn gave up on the connection: it is closed
        pass


def _guarded_app(
    app: Any, guard: _Guard, svc: Services, reserved: frozenset[str], via_socket: bool
) -> Callable[..., Awaitable[None]]:
    """``app`` for one connection: tells ``guard`` the request's phases, refuses a
    body over ``max_request_bytes`` as it is read (:class:`.responses.BodyTooLarge` from
    ``receive()``, so every door answers 413 in its own shape), authenticates a
    request with a large body before reading any of it (:func:`_authenticate_first`),
    answers what the app raised (:func:`_request_failed`: nothing escapes into
    hypercorn, whose TCPServer would let it reach the daemon's nursery), and closes
    the connection after an answer that left the body unread."""
    config = svc.config

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            guard.request_started(False)
            guard.path, guard.method = scope.get("path", "/"), "GET"
            started = False

            async def websocket_send(message: dict) -> None:
                nonlocal started
                if message["type"] in ("websocket.accept", "websocket.http.response.start",
                                       "websocket.close"):  # fmt: skip
                    started = True
                await send(message)

            try:
                await app(scope, receive, websocket_send)
            except* Exception as group:
                await _request_failed(scope, send, group, reserved, started)
            finally:
                guard.request_done()
            return
        guard.path, guard.method = scope["path"], scope["method"]
        length, chunked = -1, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = declared_length(value)
            elif name == b"transfer-encoding":
                chunked = True
        has_body = chunked or length > 0
        # The import streams an export of any size to disk; only an admin gets that far.
        unlimited = scope["path"] == IMPORT_PATH
        guard.request_started(has_body and not unlimited)
        if not has_body:  # nothing to limit or time: no wrappers on the hot path
            try:
                await app(scope, receive, send)
            except* Exception as group:
                failed = cors.wrap_send(send, _cors_headers(config, scope))
                await _request_failed(scope, failed, group, reserved, guard.responded)
            finally:
                guard.request_done()
            return
        guard.cors = _cors_headers(config, scope)
        guard.upload = may_carry_file(scope["path"], scope["method"], reserved)
        limit = body_limit(config, guard.upload)
        received = 0
        body_done = not has_body

        async def guarded_receive() -> dict:
            nonlocal received, body_done
            if not unlimited:
                check_body_size(length, limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not unlimited:
                    check_body_size(received, limit)
                if not message.get("more_body", False):
                    body_done = True
                    guard.body_received()
            return message

        async def guarded_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                guard.responded = True
                if not body_done:
                    # the unread rest of the body would garble the next request
                    headers = [
                        h for h in message.get("headers", []) if h[0].lower() != b"connection"
                    ]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            final = message["type"] == "http.response.body" and not message.get("more_body", False)
            if final and not body_done:
                # hypercorn hands the app the end of the request as one more message in
                # a bounded queue that the unread body may have filled: drain it while
                # the answer ends, or the connection (and the app) would hang forever.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, receive)
                    await send(message)
                    nursery.cancel_scope.deadline = trio.current_time() + 5
            else:
                await send(message)
            if final:
                guard.request_done()

        try:
            if (chunked or length > AUTH_FIRST_BYTES) and not via_socket:
                refusal = await _authenticate_first(svc, scope, reserved)
                if refusal is not None:
                    refuse_send = cors.wrap_send(guarded_send, guard.cors)
                    for message in refusal:
                        await refuse_send(message)
                    return
            await app(scope, guarded_receive, guarded_send)
        except* Exception as group:
            failed = cors.wrap_send(guarded_send, guard.cors)
            await _request_failed(scope, failed, group, reserved, guard.responded)
        finally:
            guard.request_done()

    return guarded


@dataclass
class Listener:
    name: str  # "http" or "socket"
    sock: trio.socket.SocketType
    address: str


def hypercorn_config(svc: Services) -> HyperConfig:
    return make_config(
        keep_alive_timeout=svc.config.keep_alive_timeout,
        graceful_timeout=svc.config.graceful_timeout,
        head_limit=HEAD_LIMIT,
        websocket_max_message_size=MAX_CLIENT_MESSAGE,  # the ASGI fallbacks: the same limit
        errorlog=logging.getLogger("notifyd.http"),
    )


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


class _Connection:
    """What the connection guard knows about a connection: who, which door, and
    whether an answer has begun."""

    __slots__ = ("peer", "door", "what", "guard", "watched")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.door = NOTIFYD
        self.what = "connection"
        self.guard: _Guard | None = None
        self.watched: _Watched | None = None

    def answerable(self) -> bool:
        """Whether a 500 may still be written: nothing of an answer went out, and a
        request is in progress (not between requests on a kept-alive connection)."""
        if self.guard is not None:
            return not self.guard.responded and self.guard.phase in ("head", "body", "busy")
        return self.watched is None or not self.watched.answered


async def _read_head(stream: trio.SocketStream, buf: bytes) -> tuple[RequestHead | None, bytes]:
    """The head of a stream request that begins with ``buf`` (read with h11; raises
    :class:`BadRequest`), and every byte read; None if the client hung up first. The
    parser is dropped on return: an idle stream does not keep it."""
    reader = HeadReader()
    head = reader.feed(buf)
    while head is None:
        data = await stream.receive_some(HEAD_LIMIT)
        if not data:
            return None, buf
        buf += data
        head = reader.feed(data)
    return head, buf


class Front:
    """Accepts connections and routes each to the stream fast path or hypercorn."""

    def __init__(self, svc: Services, app: Any) -> None:
        self.svc = svc
        self.ntfy_reserved = ntfy.reserved_names(app)
        self.hypercorn = HypercornServer(hypercorn_config(svc))
        #: the FastAPI app (Gotify's stream door authenticates with its services)
        self.fastapi = app
        # outermost, so the publish fast paths see the real client too
        self.app = with_client_address(
            PublishFastPath(app, svc), lambda: svc.config.trusted_proxies
        )
        self.socket_app = _socket_app(self.app)

    async def handle(self, stream: trio.SocketStream, via_socket: bool) -> None:
        """Serve one connection under the guard: whatever its handler raises ends
        this connection only (logged once by :func:`failure_status`, answered 500 in
        the door's shape if no answer began); the socket is closed in every case.
        Cancellation (shutdown) passes through."""
        conn = _Connection(_peer(stream, via_socket))
        try:
            await self._route(stream, via_socket, conn)
        except* Exception as group:
            culprit = _culprit(group)
            if conn.guard is not None:  # hypercorn's connection: the last request's door
                conn.what = f"{conn.guard.method} {conn.guard.path}"
                conn.door = door_of(conn.guard.path, conn.guard.method, self.ntfy_reserved)
            if culprit is not None:
                failure = failure_status(culprit, conn.door, conn.peer, conn.what)
                if conn.answerable():
                    answer = render(conn.door, failure).raw()
                    with trio.move_on_after(2):
                        try:
                            await stream.send_all(answer)
                        except _GONE:
                            pass
        finally:
            await stream.aclose()

    async def _route(self, stream: trio.SocketStream, via_socket: bool, conn: _Connection) -> None:
        buf = b""
        head: RequestHead | None = None
        config = self.svc.config
        # The whole head (request line and headers) must arrive within header_timeout;
        # hypercorn's part of it is timed by _Guard. A stream that follows lives as
        # long as its client.
        deadline = trio.current_time() + config.header_timeout
        try:
            with trio.move_on_at(deadline) as timer:
                while b"\r\n" not in buf and len(buf) < HEAD_LIMIT:
                    data = await stream.receive_some(HEAD_LIMIT)
                    if not data:
                        return
                    buf += data
                door = self._stream_door(buf)
                if door is not None:
                    conn.door = door
                    conn.what = "stream request"
                    head, buf = await _read_head(stream, buf)
                    if head is None:
                        return
            if timer.cancelled_caught:
                with trio.move_on_after(2):
                    await stream.send_all(_timeout_response("head", config.header_timeout, []))
                    await stream.send_eof()
                return
        except _GONE:
            return
        except NotifydError as exc:  # a malformed stream head (HeadReader)
            await refuse(stream, render(conn.door, exc).raw())
            return
        if head is not None and not (conn.door == GOTIFY and not head.is_websocket()):
            buf = b""  # a stream lives long: keep nothing of its head but RequestHead
            # the proxy identity headers: believed from a trusted proxy, gone for all
            identity = take_head_identity(None if via_socket else conn.peer, head.headers, config)
            set_proxy_identity(identity)  # this connection's task serves only this stream
            conn.what = f"{head.method} {head.path}"
            watched = conn.watched = _Watched(stream)
            if conn.door == NTFY:
                address = client_address(conn.peer, head.headers.items(), config.trusted_proxies)
                await ntfy_streams.serve_raw(
                    self.svc, self.ntfy_reserved, watched, head, via_socket, address
                )
            elif conn.door == GOTIFY:
                address = client_address(conn.peer, head.headers.items(), config.trusted_proxies)
                await gotify.serve_raw_stream(
                    self.svc, self.fastapi, watched, head, via_socket, address
                )
            else:
                await serve_raw_stream(self.svc, watched, head, via_socket)
            return
        # everything else, Gotify's /stream without an Upgrade included: hypercorn
        conn.door, conn.what = NOTIFYD, "connection"
        guard = conn.guard = _Guard(stream, buf, config, deadline)
        app = _guarded_app(
            self.socket_app if via_socket else self.app, guard, self.svc, self.ntfy_reserved,
            via_socket,
        )  # fmt: skip
        app = with_proxy_identity(app, lambda: self.svc.config, None if via_socket else conn.peer)
        await self.hypercorn.serve(app, guard)

    def _stream_door(self, buf: bytes) -> str | None:
        """The door of a new connection's first request if it opens a stream served on
        the raw transport (``buf`` holds at least its request line), else None."""
        if buf.startswith(STREAM_PREFIXES):
            return NOTIFYD
        if ntfy_streams.fast_path_match(buf, self.ntfy_reserved):
            return NTFY
        if buf.startswith(GOTIFY_STREAM_PREFIXES):
            return GOTIFY
        return None

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
        await self.hypercorn.terminate()
