"""A small synchronous client for the notifyd HTTP API, used by the CLI and the TUI
(whose live feed takes an ``httpx.AsyncClient`` for the same daemon from
:meth:`Client.async_http`).

It talks to the daemon over its Unix socket, where the caller acts as the socket's
admin user, or over TCP with a bearer token. Where to connect is resolved in this
order:

1. the ``socket_path`` / ``url`` / ``token`` arguments;
2. the environment: ``NOTIFYD_SOCKET``, ``NOTIFYD_URL``, ``NOTIFYD_TOKEN``;
3. the default socket: ``./var/notifyd.sock`` if it exists (what ``make run``
   creates), else ``/run/notifyd/notifyd.sock`` (the systemd unit's).

A socket wins over a URL at the same level. The token is sent over TCP only: on the
socket the daemon already knows who the caller is.

Every failure is raised as :class:`ClientError`, whose message says what to do
about it. The module imports only httpx so that ``notifyd send`` starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from notifyd import __version__

DEFAULT_SOCKETS = ("./var/notifyd.sock", "/run/notifyd/notifyd.sock")
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
_START_HINT = "is the daemon running? (`make run` or `notifyd serve`)"


class ClientError(Exception):
    """A request that did not succeed.

    ``status`` is the HTTP status, or 0 when the daemon could not be reached at all.
    ``code`` is the daemon's stable error slug (``invalid``, ``not_found``, …) or
    ``unreachable`` / ``timeout`` / ``protocol`` for transport failures.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        if self.field and self.field not in self.message:
            return f"{self.message} (field: {self.field})"
        return self.message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in (429, 502, 503, 504)


class Client:
    """Synchronous notifyd API client; use as a context manager or call :meth:`close`.

    Args:
        socket_path: the daemon's Unix socket.
        url: the daemon's base URL (``http://host:8780``), used when no socket is given.
        token: a ``nfy_…`` bearer token for TCP.
        timeout: seconds to wait for a connection and for each response.
        transport: an httpx transport to use instead (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        socket_path: str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if socket_path and url:
            raise ClientError(
                0, "usage", "give either a socket or a URL, not both (--socket or --url)"
            )
        env = os.environ
        if not socket_path and not url:
            socket_path = env.get("NOTIFYD_SOCKET") or None
            url = None if socket_path else (env.get("NOTIFYD_URL") or None)
        if not socket_path and not url:
            socket_path = next((p for p in DEFAULT_SOCKETS if os.path.exists(p)), None)
            socket_path = socket_path or DEFAULT_SOCKETS[-1]
        self.socket_path = socket_path
        self.url = _normalise_url(url) if url and not socket_path else None
        self.token = (token or env.get("NOTIFYD_TOKEN") or None) if self.url else None
        self.timeout = timeout

        headers = {"User-Agent": f"notifyd-cli/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._headers = headers
        if self.url:
            self.target = self.url
            self._http = httpx.Client(
                base_url=self.url, headers=headers, timeout=timeout, transport=transport
            )
        else:
            self.target = f"socket {self.socket_path}"
            self._http = httpx.Client(
                base_url="http://notifyd",
                headers=headers,
                timeout=timeout,
                transport=transport or httpx.HTTPTransport(uds=self.socket_path),
            )

    def async_http(self, **options: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for the same daemon (same socket or URL, token and
        headers), for asyncio callers such as the TUI's live feed. The caller closes
        it; ``options`` go to ``httpx.AsyncClient`` (e.g. ``transport=`` in tests)."""
        options.setdefault("timeout", self.timeout)
        if self.url:
            return httpx.AsyncClient(base_url=self.url, headers=self._headers, **options)
        options.setdefault("transport", httpx.AsyncHTTPTransport(uds=self.socket_path))
        return httpx.AsyncClient(base_url="http://notifyd", headers=self._headers, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json_body: Any = None,
        headers: dict | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or None for an empty one."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(
                method, path, params=params or None, json=json_body, headers=headers
            )
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc
        if resp.status_code == 204 or (resp.status_code < 400 and not resp.content):
            return None
        return self.answer(resp, f"{method} {path}")

    def answer(self, resp: httpx.Response, what: str) -> Any:
        """The decoded JSON body of a response to ``what`` (e.g. ``GET /v1/events``),
        which may come from the sync or the async client; an error status or a body
        that is not JSON raises :class:`ClientError`."""
        if resp.status_code >= 400:
            raise self.http_error(resp)
        try:
            return resp.json()
        except ValueError as exc:
            raise ClientError(
                resp.status_code,
                "protocol",
                f"{self.target} answered {what} with something that is not JSON: "
                "is that really notifyd?",
            ) from exc

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        content: Iterable[bytes] | bytes | None = None,
        headers: dict | None = None,
    ) -> Iterator[httpx.Response]:
        """Send one request and hand over the response with its body unread: for
        downloads and uploads of any size (backup, export, import).

        ``content`` may be an iterator of bytes, sent chunked as it is produced. No
        read timeout applies (a backup of a large database takes a while to start).
        Raises :class:`ClientError` for an answer >= 400 and for a transport failure,
        also one while the caller reads the body inside the ``with`` block.
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with self._http.stream(
                method,
                path,
                params=params or None,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, read=None),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self.http_error(resp)
                yield resp
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc

    def http_error(self, resp: httpx.Response) -> ClientError:
        """The :class:`ClientError` for an answer >= 400 (its body must have been read)."""
        code, message, field = f"http_{resp.status_code}", "", None
        try:
            err = resp.json().get("error")
            if isinstance(err, dict):
                code = str(err.get("code") or code)
                message = str(err.get("message") or "")
                field = err.get("field")
            elif isinstance(err, str):
                message = err
        except (ValueError, AttributeError):
            pass
        if not message:
            text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
            message = f"HTTP {resp.status_code} {resp.reason_phrase}" + (
                f": {text}" if text else ""
            )
        if resp.status_code == 401:
            if self.url and not self.token:
                message += (
                    f" — {self.target} needs a token: pass --token or set NOTIFYD_TOKEN "
                    "(an admin creates one with `notifyd tokens create --user NAME`)"
                )
            elif self.url:
                message += " — check --token / NOTIFYD_TOKEN"
        elif resp.status_code in (429, 503):
            retry = resp.headers.get("Retry-After")
            if retry:
                message += f" (retry after {retry} s)"
        return ClientError(resp.status_code, code, message, field)

    def transport_error(self, exc: httpx.TransportError) -> ClientError:
        """The :class:`ClientError` for a failure to reach the daemon or to read from it."""
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(
                0,
                "timeout",
                f"notifyd at {self.target} did not answer within {self.timeout:g} s: "
                "it may be overloaded or stuck; check its log",
            )
        if isinstance(exc, httpx.ConnectError):
            return ClientError(0, "unreachable", self._connect_hint())
        detail = str(exc).rstrip(".") or type(exc).__name__
        return ClientError(
            0, "protocol", f"lost the connection to notifyd at {self.target}: {detail}"
        )

    def _connect_hint(self) -> str:
        if self.url:
            return (
                f"cannot reach notifyd at {self.url}: is the daemon running and listening "
                "there? (check --url / NOTIFYD_URL)"
            )
        path = self.socket_path or ""
        if not os.path.exists(path):
            return (
                f"cannot reach notifyd at socket {path}: {_START_HINT}; "
                "point --socket / NOTIFYD_SOCKET at its socket, or use --url with --token"
            )
        if not os.access(path, os.R_OK | os.W_OK):
            return (
                f"permission denied on socket {path}: join the group that owns it "
                "(the socket is mode 0660), or use --url with --token"
            )
        return f"cannot reach notifyd at socket {path} (nothing accepts connections): {_START_HINT}"

    # --- events -------------------------------------------------------------

    def publish(self, event: dict, idempotency_key: str | None = None) -> dict:
        """POST one event; returns the stored event (201, or 200 for a known key)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/events", json_body=event, headers=headers)

    def events(self, **filters: Any) -> dict:
        """GET the caller's history: ``{"events": [...], "next": cursor | None}``."""
        return self.request("GET", "/v1/events", params=filters)

    def set_state(self, ids: Iterable[int], state: str) -> list[int]:
        """Set the read state of events; returns the ids the daemon updated."""
        body = {"ids": list(ids), "state": state}
        resp = self.request("POST", "/v1/inbox/state", json_body=body) or {}
        return list(resp.get("updated") or [])

    def read_all(self, topic: str | None = None, category: str | None = None) -> dict:
        """Mark the whole inbox (or one topic/category) read: ``{"updated": n, "upto": id}``."""
        params = {"topic": topic, "category": category}
        return self.request("POST", "/v1/inbox/read-all", params=params) or {}

    def latest_id(self) -> int | None:
        """The newest event id the caller can see (0 when none), or None if not allowed."""
        try:
            page = self.events(limit=1)
        except ClientError as exc:
            if exc.status in (401, 403, 404):
                return None
            raise
        events = (page or {}).get("events") or []
        return int(events[0]["id"]) if events else 0

    # --- stream -------------------------------------------------------------

    def follow(
        self,
        topics: Iterable[str] = (),
        since: int | None = None,
        *,
        on_retry: Callable[[float, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict]:
        """Yield stream frames (``event`` and ``state``) forever, reconnecting as needed.

        ``since`` is the cursor to start after (0 = from the beginning); None means
        live only, in which case the newest visible id is fetched first so that a
        reconnect can resume without a gap. After a drop or a ``resync`` frame the
        stream is reopened with ``since=<last id>``, backing off from 0.5 s to 10 s;
        ``on_retry(delay, reason)`` is told each time. Events already yielded are not
        yielded again. A failure before the first connection, and any 4xx answer, is
        raised as :class:`ClientError`. Stop by closing the generator (or Ctrl-C).
        """
        topic_list = list(topics)
        cursor = since if since is not None else self.latest_id()
        seen: dict[int, None] = {}  # insertion-ordered set of recent ids
        delay = BACKOFF_MIN
        connected = False
        while True:
            reason = "the stream ended"
            try:
                for frame in self._sse(topic_list, cursor):
                    if isinstance(frame, _Opened):
                        connected, delay = True, BACKOFF_MIN
                        continue
                    kind = frame.get("type")
                    if kind == "resync":
                        reason = f"the daemon asked to resync ({frame.get('reason', 'behind')})"
                        delay = BACKOFF_MIN
                        break
                    if kind == "event":
                        eid = (frame.get("event") or {}).get("id")
                        if isinstance(eid, int):
                            if eid in seen:
                                continue
                            seen[eid] = None
                            if len(seen) > 4096:
                                seen.pop(next(iter(seen)))
                            cursor = eid if cursor is None else max(cursor, eid)
                        yield frame
                    elif kind == "state":
                        yield frame
            except ClientError as exc:
                if not connected or not exc.retryable:
                    raise
                reason = str(exc)
            wait = delay * (1 + random.random() / 4)  # jitter spreads reconnects after a restart
            if on_retry:
                on_retry(wait, reason)
            sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX)

    def _sse(self, topics: list[str], since: int | None) -> Iterator[Any]:
        params: dict[str, Any] = {}
        if topics:
            params["topics"] = ",".join(topics)
        if since is not None:
            params["since"] = since
        timeout = httpx.Timeout(self.timeout, read=None)  # keepalives arrive at the daemon's pace
        try:
            with self._http.stream(
                "GET",
                "/v1/stream/sse",
                params=params,
                timeout=timeout,
                headers={"Accept": "text/event-stream"},
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self.http_error(resp)
                yield _Opened()
                data: list[str] = []
                for line in resp.iter_lines():
                    if not line:
                        if data:
                            frame = _decode_frame("\n".join(data))
                            data = []
                            if frame is not None:
                                yield frame
                        continue
                    if line.startswith(":"):
                        continue  # an SSE comment, used as a heartbeat by some servers
                    name, _, value = line.partition(":")
                    if name == "data":
                        data.append(value[1:] if value.startswith(" ") else value)
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc

    # --- users, tokens, ACL -------------------------------------------------

    def users(self) -> list[dict]:
        return (self.request("GET", "/v1/users") or {}).get("users") or []

    def add_user(self, name: str, role: str = "user", password: str | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "role": role}
        if password is not None:
            body["password"] = password
        return self.request("POST", "/v1/users", json_body=body) or {}

    def remove_user(self, name: str) -> None:
        self.request("DELETE", f"/v1/users/{_seg(name)}")

    def set_password(self, name: str, password: str) -> None:
        self.request("PUT", f"/v1/users/{_seg(name)}/password", json_body={"password": password})

    def create_token(
        self,
        user: str,
        scopes: list[str] | None = None,
        topics: str | None = None,
        label: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {"user": user, "topics": topics}
        if scopes:
            body["scopes"] = scopes
        if label is not None:
            body["label"] = label
        return self.request("POST", "/v1/tokens", json_body=body) or {}

    def tokens(self, user: str | None = None) -> list[dict]:
        return (self.request("GET", "/v1/tokens", params={"user": user}) or {}).get("tokens") or []

    def revoke_token(self, token_id: int | str) -> None:
        self.request("DELETE", f"/v1/tokens/{_seg(token_id)}")

    def grant(self, user: str, pattern: str, permission: str) -> dict:
        body = {"user": user, "pattern": pattern, "permission": permission}
        return self.request("POST", "/v1/acl", json_body=body) or {}

    def acl(self, user: str | None = None) -> list[dict]:
        return (self.request("GET", "/v1/acl", params={"user": user}) or {}).get("acl") or []

    def revoke(self, user: str, pattern: str) -> None:
        self.request("DELETE", "/v1/acl", params={"user": user, "pattern": pattern})

    # --- inbound webhooks -----------------------------------------------------

    def hooks(self, all_users: bool = False) -> list[dict]:
        """The caller's webhooks (every user's with ``all_users``, for admins); the
        URLs listed carry no secret."""
        params = {"all": "true" if all_users else None}
        return (self.request("GET", "/v1/hooks", params=params) or {}).get("hooks") or []

    def create_hook(self, body: dict) -> dict:
        """POST /v1/hooks: the answer is the only one that holds ``secret`` (and the
        ``url`` with it)."""
        return self.request("POST", "/v1/hooks", json_body=body) or {}

    def find_hook(self, name_or_id: str, all_users: bool = False) -> dict:
        """The hook whose id or name is ``name_or_id``; :class:`ClientError` 404 when
        none is, 409 when a name matches hooks of several users (give the id)."""
        found = self.hooks(all_users=all_users)
        by_id = [h for h in found if str(h.get("id")) == name_or_id]
        if by_id:
            return by_id[0]
        by_name = [h for h in found if h.get("name") == name_or_id]
        if len(by_name) == 1:
            return by_name[0]
        if by_name:
            raise ClientError(
                409, "ambiguous", f"{len(by_name)} hooks are named {name_or_id!r}: give its id"
            )
        raise ClientError(404, "not_found", f"no webhook named {name_or_id!r} (nor with that id)")

    def remove_hook(self, hook_id: str) -> None:
        self.request("DELETE", f"/v1/hooks/{_seg(hook_id)}")

    def test_hook(
        self, hook_id: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> list[dict]:
        """Render a payload (None: the template's sample) with the hook's template,
        without publishing: the events it would make."""
        body: dict[str, Any] = {}
        if payload is not None:
            body["payload"] = payload
        if headers:
            body["headers"] = headers
        answer = self.request("POST", f"/v1/hooks/{_seg(hook_id)}/test", json_body=body) or {}
        return list(answer.get("events") or [])

    # --- attachments ------------------------------------------------------------

    def upload_attachment(
        self,
        content: Iterable[bytes] | bytes,
        filename: str,
        size: int | None = None,
        content_type: str | None = None,
    ) -> dict:
        """POST /v1/attachments with the file's bytes (an iterator is streamed);
        returns ``{"id", "name", "type", "size", "expires_at", "url"}``."""
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        with self.stream(
            "POST",
            "/v1/attachments",
            params={"filename": filename},
            content=content,
            headers=headers,
        ) as resp:
            resp.read()
            return self.answer(resp, "POST /v1/attachments") or {}

    def attachment_url(self, attachment: dict) -> str | None:
        """Where a browser can fetch ``attachment``: its external URL, or over TCP the
        daemon's URL joined with the upload's path; None over the socket for an upload
        (no browser reaches a Unix socket: see :meth:`attachment_fetch_hint`)."""
        url = str(attachment.get("url") or "")
        if not url:
            return None
        if url.startswith(("http://", "https://")):
            return url
        if self.url:
            return self.url + "/" + url.lstrip("/")
        return None

    def attachment_fetch_hint(self, attachment: dict) -> str:
        """A command that downloads ``attachment`` (for the socket, where
        :meth:`attachment_url` has no answer)."""
        url = str(attachment.get("url") or "")
        name = str(attachment.get("name") or "attachment")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "attachment"
        if url.startswith(("http://", "https://")):
            return f"curl -fo {safe} {shlex.quote(url)}"
        if self.url:
            auth = " -H 'Authorization: Bearer $NOTIFYD_TOKEN'" if self.token else ""
            return f"curl -fo {safe}{auth} {self.attachment_url(attachment)}"
        return f"curl -fo {safe} --unix-socket {self.socket_path} http://notifyd/{url.lstrip('/')}"


class _Opened:
    """Yielded by ``_sse`` once the daemon has accepted the stream."""

    __slots__ = ()


def _decode_frame(data: str) -> dict | None:
    try:
        frame = json.loads(data)
    except ValueError:
        return None  # one garbled frame should not end a long-running tail
    return frame if isinstance(frame, dict) else None


def _seg(value: str | int) -> str:
    return quote(str(value), safe="")


def _normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url  # `--url localhost:8780` is what people type
    return url
