"""Poll requests to an upstream ntfy server, for the ntfy iOS app (docs/mobile.md).

The stock ntfy iOS app cannot keep a connection open in the background; Apple
wakes it only through APNs, which only ntfy.sh (or another server with Apple
credentials) can reach. ntfy solves this with ``upstream-base-url``: for every
message, the self-hosted server sends the upstream an empty
``POST {upstream}/{sha256_hex(base_url + "/" + topic)}`` with ``X-Poll-ID: <message
id>``; the upstream pushes a ``poll_request`` to the apps subscribed to that hash,
and each app fetches ``GET {base_url}/{topic}/json?poll=1&id=<message id>`` from
this server, with its own credentials. notifyd does the same.

How it is built, without a change to the store: when ``upstream_base_url`` is set,
the daemon keeps a system account :data:`SYSTEM_USER` (an admin, so that it reads
every topic and its sends are trusted by ``private_destinations`` like any admin's
channel; no password, no tokens) owning one channel :data:`CHANNEL_NAME` of kind
:data:`KIND`. Publishing then plans one outbox row per event for it like for any
channel, in the event's transaction — for a scheduled event when it is released —
so poll requests survive restarts and are retried with backoff by the delivery
worker. The account's preferences are fixed by :func:`ensure_upstream` at every
start: no quiet hours, no digests, no rate limit, and UnifiedPush messages
(category ``unifiedpush``) muted, so that they get no poll request (as in ntfy).
Other users' preferences are theirs and never touch this channel. The sender is
the ``ntfy-upstream`` plugin (``notifyd/plugins/upstream``); this module only names
things and keeps the account in shape, and imports no HTTP code.
"""

from __future__ import annotations

import hashlib
import logging

from .channels import ChannelRecord
from .config import Config
from .errors import Conflict
from .prefs import Preferences
from .store import Store

log = logging.getLogger("notifyd.upstream")

#: the channel kind, the system account and its one channel share this name
KIND = "ntfy-upstream"
SYSTEM_USER = KIND
CHANNEL_NAME = KIND
#: the category ntfy publishes with ``up=1`` get (see ``notifyd/api/compat/ntfy_message.py``)
UNIFIEDPUSH_CATEGORY = "unifiedpush"
#: the system account's preferences, written at every start
PREFERENCES = {
    "rules": [{"topic": "*", "category": UNIFIEDPUSH_CATEGORY, "mute": True}],
}


def topic_hash(base_url: str, topic: str) -> str:
    """What the upstream and Apple see of a topic: sha256 of its ntfy URL on this
    server, in hex — the same value the ntfy app computes for its subscription."""
    return hashlib.sha256(f"{base_url.rstrip('/')}/{topic}".encode()).hexdigest()


def poll_url(config: Config, topic: str) -> str:
    """Where the poll request for an event on ``topic`` goes."""
    return f"{config.upstream_base_url.rstrip('/')}/{topic_hash(config.base_url, topic)}"


async def ensure_upstream(config: Config, store: Store) -> ChannelRecord | None:
    """Bring the system account and its channel in line with the configuration:
    created (and its preferences reset) when ``upstream_base_url`` is set, the
    channel removed when it is not (its pending poll requests become ``dead``).
    Returns the channel, or None when there is none. Idempotent; safe when several
    cluster nodes start at once."""
    user = await store.get_user(SYSTEM_USER)
    if not config.upstream_base_url:
        if user is not None:
            for ch in await store.list_channels(user.id, KIND):
                await store.delete_channel(ch.id)
                log.info("upstream_base_url is empty: channel %r removed", ch.name)
        return None
    if user is None:
        try:
            user = await store.create_user(SYSTEM_USER, "admin", None)
        except Conflict:  # another node created it just now
            user = await store.get_user(SYSTEM_USER)
        if user is None:
            return None
    if user.role != "admin":
        log.error(
            "upstream_base_url is set, but the account %r exists and is not an admin: it is "
            "not the system account notifyd keeps for poll requests; rename or remove it "
            "(notifyd users remove %s) and restart. No poll requests are sent.",
            SYSTEM_USER, SYSTEM_USER,
        )  # fmt: skip
        return None
    # validated like any user's document, then stored as is
    await store.set_preferences(user.id, Preferences.from_json(PREFERENCES).to_json())
    channel = await store.get_channel(user.id, CHANNEL_NAME)
    if channel is None:
        try:
            channel = await store.create_channel(user.id, CHANNEL_NAME, KIND, {})
        except Conflict:
            channel = await store.get_channel(user.id, CHANNEL_NAME)
    return channel
