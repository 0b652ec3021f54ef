"""The live feed: the daemon's SSE stream, read in a thread, posted to the app as messages.

:meth:`notifyd.client.Client.follow` blocks in a socket read, so it runs in a thread
of its own with a client of its own. It already reconnects with ``since=<last id>``
(backing off from 0.5 s to 10 s) and drops events it has already yielded; this
module adds what a UI needs on top:

* :class:`ConnectionStatus` changes — connecting, connected, reconnecting (with the
  reason and the delay), failed — for the connection indicator;
* a retry loop around the *first* connection too (``follow`` gives up when the
  daemon is not there at all, a UI should keep trying);
* a prompt stop: :meth:`LiveFeed.stop` shuts the stream's socket down from the
  app's thread, which ends the blocked read at once, and the thread is a daemon
  thread so that even a connect that hangs cannot keep the process alive.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import httpx
from textual.message import Message
from textual.message_pump import MessagePump

from notifyd.client import BACKOFF_MAX, BACKOFF_MIN, Client, ClientError

State = Literal["idle", "connecting", "connected", "reconnecting", "failed"]


@dataclass(frozen=True)
class ConnectionStatus:
    """Where the live stream stands.

    ``connects`` counts successful connections: more than one means the feed has
    reconnected (and resumed with ``since``). ``reason`` says why it is not connected;
    ``retry_in`` is the delay before the next attempt, in seconds.
    """

    state: State = "idle"
    reason: str = ""
    retry_in: float | None = None
    connects: int = 0
    cursor: int | None = None


class _Stopped(Exception):
    """Raised inside the feed's thread to leave ``follow`` when the feed is stopped."""


class LiveFeed:
    """Follows the stream in a daemon thread and posts :class:`LiveFeed.Frame` and
    :class:`LiveFeed.StatusChanged` messages to ``target`` (the app).

    Args:
        target: where messages go; ``post_message`` is thread-safe.
        make_client: builds the feed's own :class:`Client` (closed by the thread).
        topics: stream only these topics (names or ``*`` patterns); all by default.
    """

    @dataclass
    class Frame(Message):
        """A stream frame: ``{"type": "event", "event": {...}}`` or a ``state`` frame."""

        frame: dict

    @dataclass
    class StatusChanged(Message):
        """The connection changed state."""

        status: ConnectionStatus

    def __init__(
        self,
        target: MessagePump,
        make_client: Callable[[], Client],
        topics: tuple[str, ...] = (),
    ) -> None:
        self.target = target
        self.make_client = make_client
        self.topics = topics
        self.status = ConnectionStatus()
        #: how the thread waits between attempts; returns early when the feed stops
        self.sleep: Callable[[float], None] = self._interruptible_sleep
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, since: int | None) -> None:
        """Start following after event ``since`` (None: live only). Idempotent."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(since,), name="notifyd-live-feed", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread: end the blocked read, wake any back-off, wait ``timeout`` s."""
        with self._lock:
            self._stopping.set()
            response, self._response = self._response, None
        if response is not None:
            _shutdown(response)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- the thread ----------------------------------------------------------

    def _run(self, since: int | None) -> None:
        cursor = since
        delay = BACKOFF_MIN
        client: Client | None = None
        try:
            client = self.make_client()
            self._set_status(ConnectionStatus("connecting", cursor=cursor))
            while not self._stopping.is_set():
                try:
                    for frame in client.follow(
                        self.topics,
                        cursor,
                        on_retry=self._on_retry,
                        on_open=self._on_open,
                        sleep=self._sleep,
                    ):
                        if self._stopping.is_set():
                            return
                        if frame.get("type") == "event":
                            eid = (frame.get("event") or {}).get("id")
                            if isinstance(eid, int):
                                cursor = eid if cursor is None else max(cursor, eid)
                                self.status = replace(self.status, cursor=cursor)
                        self._post(LiveFeed.Frame(frame))
                except ClientError as exc:
                    # follow() raises when the *first* connection fails (or on a 4xx)
                    if self._stopping.is_set():
                        return
                    if not exc.retryable:
                        self._set_status(
                            replace(self.status, state="failed", reason=str(exc), retry_in=None)
                        )
                        return
                    self._on_retry(delay, str(exc))
                    self._sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
        except _Stopped:
            pass
        finally:
            if client is not None:
                client.close()

    def _on_open(self, response: httpx.Response) -> None:
        with self._lock:
            if self._stopping.is_set():
                _shutdown(response)
                return
            self._response = response
        status = self.status
        self._set_status(
            ConnectionStatus("connected", connects=status.connects + 1, cursor=status.cursor)
        )

    def _on_retry(self, delay: float, reason: str) -> None:
        with self._lock:
            self._response = None
        if self._stopping.is_set():
            raise _Stopped
        self._set_status(replace(self.status, state="reconnecting", reason=reason, retry_in=delay))

    def _sleep(self, seconds: float) -> None:
        if self._stopping.is_set():
            raise _Stopped
        self.sleep(seconds)
        if self._stopping.is_set():
            raise _Stopped

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _set_status(self, status: ConnectionStatus) -> None:
        self.status = status
        self._post(LiveFeed.StatusChanged(status))

    def _post(self, message: Message) -> None:
        try:
            self.target.post_message(message)
        except RuntimeError:  # the app's loop is already closed: we are on the way out
            self._stopping.set()


def _shutdown(response: httpx.Response) -> None:
    """Shut the response's socket down, which wakes a read blocked in another thread
    (closing the descriptor would not, and would race with that thread)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the other side
