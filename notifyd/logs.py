"""Structured logs to stderr: ``level=info logger=notifyd.x msg="..." key=value``.

With a node name (``node_name``, cluster mode) each line also carries ``node=NAME``
after the level, so that the logs of several nodes can be merged and told apart.

Under systemd (``JOURNAL_STREAM`` set) lines carry a syslog priority prefix and no
timestamp, since journald records both.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_SYSLOG = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, journald: bool, node: str = "") -> None:
        super().__init__()
        self.journald = journald
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if not self.journald:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            parts.append(f"ts={ts}.{int(record.msecs):03d}Z")
        parts.append(f"level={record.levelname.lower()}")
        if self.node:
            parts.append(f"node={_quote(self.node)}")
        parts.append(f"logger={record.name}")
        parts.append(f"msg={_quote(record.getMessage())}")
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(str(value))}")
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info))
        if self.journald:
            line = f"<{_SYSLOG.get(record.levelno, 6)}>" + line
        return line


def set_level(level: str) -> None:
    """Change the log level of a running process (configuration reload)."""
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("notifyd").setLevel(level.upper())


def setup_logging(level: str, node: str = "") -> None:
    """Log to stderr at ``level``; ``node``: the node name every line carries ("" = none)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(journald="JOURNAL_STREAM" in os.environ, node=node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("notifyd").setLevel(level.upper())
    # httpx logs every request URL at INFO; push endpoints carry secrets in their path
    logging.getLogger("httpx").setLevel(logging.WARNING)
