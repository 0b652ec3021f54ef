"""Configuration reload on SIGHUP (``systemctl reload notifyd``).

The file is read again, with the same flags and environment as at start. Keys
that the daemon reads each time it uses them take effect at once, for new
requests and streams alike, without dropping a connection. The others need a
restart; the reload says which, and keeps the running values. A file that no
longer loads changes nothing: the error is logged and the daemon carries on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from .config import Config, ConfigError
from .logs import set_level

log = logging.getLogger("notifyd")

#: keys applied at once on reload (everything reads them from the live Config)
LIVE_KEYS = frozenset({
    "log_level", "max_request_bytes", "max_batch_events", "stream_send_timeout",
    "replay_page", "retention_days", "session_days", "graceful_timeout",
    "ntfy_keepalive_seconds", "publish_rate", "publish_burst", "max_channels_per_user",
    "max_streams_per_user", "header_timeout", "body_timeout", "trusted_proxies",
    "cors_origins",
})  # fmt: skip


def apply_reload(config: Config, load: Callable[[], Config]) -> tuple[list[str], list[str]]:
    """Load the configuration again and apply what can change live.

    Returns (keys applied, keys that changed but need a restart). Raises
    ConfigError if the file no longer loads (nothing is changed then).
    """
    fresh = load()
    applied, restart = [], []
    for field in dataclasses.fields(Config):
        old, new = getattr(config, field.name), getattr(fresh, field.name)
        if old == new:
            continue
        if field.name in LIVE_KEYS:
            setattr(config, field.name, new)
            applied.append(field.name)
        else:
            restart.append(field.name)
    if "log_level" in applied:
        set_level(config.log_level)
    return applied, restart


def reload_and_report(config: Config, load: Callable[[], Config]) -> str:
    """:func:`apply_reload`, logged; returns a one-line status for sd_notify."""
    try:
        applied, restart = apply_reload(config, load)
    except ConfigError as exc:
        log.error("reload failed, configuration unchanged: %s", exc)
        return "reload failed: configuration unchanged"
    if applied:
        log.info("reloaded: %s", ", ".join(f"{k}={getattr(config, k)!r}" for k in applied))
    else:
        log.info("reloaded: nothing that can change live has changed")
    if restart:
        log.warning("changed but needs a restart to take effect: %s", ", ".join(restart))
    return f"reloaded ({len(applied)} applied, {len(restart)} need a restart)"
