"""The daemon's parts, wired together once and handed to every front end."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Config
from .accounts import Accounts
from .hub import Hub
from .store import Store

log = logging.getLogger("notifyd.plugins")

if TYPE_CHECKING:
    from .channels import Channel
    from .outbox import Outbox
    from .plugins import Plugins


@dataclass
class Services:
    config: Config
    store: Store
    hub: Hub
    accounts: Accounts
    started_at: float = 0.0
    plugins: Plugins | None = None
    #: one instance per channel kind, from the plugins
    channels: dict[str, Channel] = field(default_factory=dict)
    outbox: Outbox | None = None
    #: "deliveries may be due": wakes the outbox, in this process or the worker's
    wake_delivery: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config, store: Store) -> Services:
        hub = Hub(queue_size=config.stream_queue)
        store.add_commit_listener(hub.publish)
        return cls(config=config, store=store, hub=hub, accounts=Accounts(store, hub))

    def start_delivery(self, plugins: Plugins) -> None:
        """Instantiate the plugins' channel kinds and the outbox that drives them."""
        from .outbox import Outbox

        self.plugins = plugins
        plugins.call_safely("startup", services=self)
        for kind, cls in plugins.channel_kinds().items():
            try:
                self.channels[kind] = cls(self)
            except Exception:
                log.exception("channel kind %s failed to start", kind)
        self.outbox = Outbox(self, self.channels)
        self.wake_delivery = self.outbox.wake
        self.store.add_commit_listener(lambda events: self.wake_delivery(events))
