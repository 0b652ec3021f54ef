"""Compatibility layers: ntfy's and Gotify's wire protocols over notifyd's core.

Thin translations onto the same events, accounts, ACLs, inbox and fan-out — no
second store, no second hub. The top level of the URL space is shared: notifyd's
own names (``v1``, the web page's files, Gotify's endpoints) are reserved, and
every other single-segment path is an ntfy topic.
"""

from __future__ import annotations

#: top-level names that are not ntfy topics (publishing to them is refused clearly)
RESERVED = frozenset({
    "v1", "static", "sw.js", "manifest.webmanifest", "healthz", "metrics", "favicon.ico",
    # Gotify's API
    "message", "stream", "application", "client", "current", "health", "version", "user",
    "plugin", "docs", "swagger",
})  # fmt: skip
