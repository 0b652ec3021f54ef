"""The daemon's configuration, for the CLI and the other front ends.

The module itself lives in the core (:mod:`notifyd.core.config`), which must not
import anything outside ``notifyd.core``; these names stay importable from here.
"""

from __future__ import annotations

from .core.config import (
    DEFAULTS,
    KEYS,
    LOG_LEVELS,
    PRIVATE_DESTINATIONS,
    Config,
    ConfigError,
    load_config,
)

__all__ = [
    "DEFAULTS",
    "KEYS",
    "LOG_LEVELS",
    "PRIVATE_DESTINATIONS",
    "Config",
    "ConfigError",
    "load_config",
]
