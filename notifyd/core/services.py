"""The daemon's parts, wired together once and handed to every front end."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from .accounts import Accounts
from .hub import Hub
from .store import Store


@dataclass
class Services:
    config: Config
    store: Store
    hub: Hub
    accounts: Accounts
    started_at: float = 0.0

    @classmethod
    def build(cls, config: Config, store: Store) -> Services:
        hub = Hub(queue_size=config.stream_queue)
        store.add_commit_listener(hub.publish)
        return cls(config=config, store=store, hub=hub, accounts=Accounts(store, hub))
