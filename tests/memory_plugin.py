"""A test plugin: channel kind ``memory`` that records deliveries.

Loaded into a daemon subprocess with ``NOTIFYD_PLUGINS=memory_plugin`` (the tests
directory on PYTHONPATH). Each send appends one JSON line to
``<data_dir>/memory-deliveries.jsonl``; a channel config ``{"fail": N}`` makes the
first N attempts of each delivery fail (retryably), ``{"fail": -1}`` always, and
``{"permanent": true}`` fails without retry, and ``{"latency": S}`` takes S seconds
per send, like a peer across a network.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import trio

from notifyd.core.channels import Channel, Delivery, DeliveryError
from notifyd.core.hookspecs import hookimpl


class MemoryChannel(Channel):
    kind: ClassVar[str] = "memory"
    timeout: ClassVar[float] = 5.0
    #: in-process record, for tests that run the outbox in the same process
    sent: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(config.get("fail", 0), int):
            raise ValueError("fail must be an integer")
        if not isinstance(config.get("latency", 0), int | float):
            raise ValueError("latency must be a number of seconds")
        return {"fail": config.get("fail", 0), "permanent": bool(config.get("permanent", False)),
                "latency": config.get("latency", 0)}  # fmt: skip

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        return dict(config)

    async def send(self, delivery: Delivery) -> None:
        cfg = delivery.channel.config
        if cfg.get("latency"):
            await trio.sleep(cfg["latency"])
        if cfg.get("permanent"):
            raise DeliveryError("refused for good", retryable=False)
        fail = cfg.get("fail", 0)
        if fail == -1 or delivery.attempt <= fail:
            raise DeliveryError(f"failing on purpose (attempt {delivery.attempt})")
        msg = delivery.message()
        record = {
            "delivery": delivery.id, "channel": delivery.channel.name, "user": delivery.channel.user,
            "event_ids": [e["id"] for e in delivery.events], "attempt": delivery.attempt,
            "title": msg.title, "body": msg.body, "click": msg.click, "sensitive": msg.sensitive,
        }  # fmt: skip
        MemoryChannel.sent.append(record)
        path = getattr(getattr(self.services, "config", None), "data_path", None)
        if path is not None:
            with open(path / "memory-deliveries.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


@hookimpl
def register_channels() -> list[type]:
    return [MemoryChannel]


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command("memory-sent")
    @click.argument("data_dir")
    def memory_sent(data_dir: str) -> None:
        """Print how many deliveries the memory channel recorded in DATA_DIR.

        \b
        Examples:
          notifyd memory-sent var
        """
        path = __import__("pathlib").Path(data_dir) / "memory-deliveries.jsonl"
        click.echo(len(path.read_text().splitlines()) if path.exists() else 0)
