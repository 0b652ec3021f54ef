"""Stream frames, serialized once and written as the same bytes to every client.

Per-message framing dominates fan-out cost, so a frame is built once per event
(the JSON text) and its wire forms — a WebSocket text frame and an SSE record —
are computed lazily, once, and shared by every subscriber that receives it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from .metrics import FRAME_ENCODINGS

# bound once: .inc() on a labelled child is the cheap part
_ENC_JSON = FRAME_ENCODINGS.labels("json")
_ENC_WS = FRAME_ENCODINGS.labels("websocket")
_ENC_SSE = FRAME_ENCODINGS.labels("sse")


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked, unfragmented server-to-client WebSocket frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def ws_close(code: int, reason: str = "") -> bytes:
    return ws_frame(struct.pack("!H", code) + reason.encode()[:120], opcode=0x8)


T = TypeVar("T")


class Frame:
    """One message of the stream protocol, with its wire forms cached."""

    __slots__ = ("event_id", "topic", "payload", "event", "_ws", "_sse", "_derived")

    def __init__(
        self,
        payload: bytes,
        event_id: int | None = None,
        topic: str | None = None,
        event: dict[str, Any] | None = None,
    ):
        self.payload = payload
        self.event_id = event_id
        self.topic = topic
        #: the event this frame carries (None for other frames), for other encodings
        self.event = event
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._derived: dict[str, Any] | None = None

    @classmethod
    def of(cls, message: dict[str, Any]) -> Frame:
        _ENC_JSON.inc()
        return cls(orjson.dumps(message))

    @classmethod
    def for_event(cls, event: dict[str, Any]) -> Frame:
        _ENC_JSON.inc()
        return cls(
            orjson.dumps({"type": "event", "event": event}), event["id"], event["topic"], event
        )

    def derived(self, key: str, build: Callable[[Frame], T], label: str | None = None) -> T:
        """Another encoding of this frame (e.g. a compatibility layer's wire form),
        built once by ``build(frame)`` and shared by every client that asks for it.
        ``label``: the encoding's name in the metrics, when ``key`` holds more (a
        client-chosen part must never become a metric label)."""
        cache = self._derived
        if cache is None:
            cache = self._derived = {}
        try:
            known: T = cache[key]
            return known
        except KeyError:
            FRAME_ENCODINGS.labels(label or key).inc()
            value = cache[key] = build(self)
            return value

    @property
    def ws(self) -> bytes:
        if self._ws is None:
            _ENC_WS.inc()
            self._ws = ws_frame(self.payload)
        return self._ws

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            _ENC_SSE.inc()
            head = b"id: %d\n" % self.event_id if self.event_id is not None else b""
            self._sse = head + b"data: " + self.payload + b"\n\n"
        return self._sse


KEEPALIVE = Frame.of({"type": "keepalive"})
