"""The daemon's parts, wired together once and handed to every front end.

Every part a front end, a plugin or a background task may reach is a typed field
of :class:`Services`; there is no bag of extra state filled on first use.
``Services.build`` makes what every process needs (hub, accounts; the store counts
the publish rate limit); ``start_delivery`` adds the plugins' channel kinds and the
outbox. The process that runs the daemon (``notifyd/daemon.py``) or the delivery worker
(``notifyd/deliverer.py``) then decides who runs the outbox, and points
``wake_delivery`` there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from .accounts import Accounts
from .config import Config
from .hub import Hub
from .outbox import Outbox
from .storage import claim_node
from .store import Event, Signal, Store

log = logging.getLogger("notifyd.plugins")

if TYPE_CHECKING:
    from .channels import Channel
    from .plugins import Plugins


class WakeDelivery(Protocol):
    """Says that deliveries may be due: called after every commit (with its events)
    and when a delivery is retried (without). It must return at once."""

    def __call__(self, events: object = None, /) -> None: ...


def no_outbox(events: object = None, /) -> None:
    """``wake_delivery`` before :meth:`Services.start_delivery`: nothing to wake."""


@dataclass
class Services:
    config: Config
    store: Store
    hub: Hub
    accounts: Accounts
    started_at: float = 0.0
    #: one import into the live database writes at a time (``POST /v1/admin/import``)
    import_lock: trio.Lock = field(default_factory=trio.Lock)
    plugins: Plugins | None = None
    #: one instance per channel kind, from the plugins
    channels: dict[str, Channel] = field(default_factory=dict)
    #: this process's outbox; it also sends channel tests. Whether it runs here or
    #: in the delivery worker is the daemon's choice (``delivery_process``).
    outbox: Outbox | None = None
    #: wakes the outbox that runs, in this process (``outbox.wake``, set by
    #: :meth:`start_delivery`) or in the worker (set by the daemon to poke it)
    wake_delivery: WakeDelivery = no_outbox

    @classmethod
    def build(cls, config: Config, store: Store) -> Services:
        hub = Hub(queue_size=config.stream_queue)
        store.add_commit_listener(hub.publish)
        svc = cls(config=config, store=store, hub=hub, accounts=Accounts(store, hub, config))
        store.add_signal_listener(svc._signalled)
        return svc

    def _signalled(self, message: Signal) -> None:
        """A signal from any node (see :meth:`Store.signal`): read state for a
        user's streams, preferences changed (the streams reconnect to re-read their
        mutes), and what :meth:`Accounts.hear_signal` handles."""
        kind, user = message.get("kind"), message.get("user")
        if kind == "state" and isinstance(user, int):
            for item in message.get("items") or ():
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], dict):
                    topic = item[1] if isinstance(item[1], str) else None
                    self.hub.publish_state(user, item[0], topic)
        elif kind == "prefs" and isinstance(user, int):
            self.hub.user_changed(user)
        else:
            self.accounts.hear_signal(message)

    def start_delivery(self, plugins: Plugins) -> None:
        """Instantiate the plugins' channel kinds and the outbox that drives them."""
        self.plugins = plugins
        plugins.call_safely("startup", services=self)
        for kind, cls in plugins.channel_kinds().items():
            try:
                self.channels[kind] = cls(self)
            except Exception:
                log.exception("channel kind %s failed to start", kind)
        self.outbox = Outbox(self, self.channels, node=claim_node(self.config))
        self.wake_delivery = self.outbox.wake
        self.store.add_commit_listener(self._committed)

    def _committed(self, events: list[Event]) -> None:
        # looked up at each commit: the daemon may point wake_delivery elsewhere later
        self.wake_delivery(events)
