"""Priorities: 1 (min) to 5 (urgent), the names accepted on input and the labels
shown on output. This is the one table of them; the CLI, the TUI and the models
import it (it imports nothing, so the CLI's send path stays light), and a test holds
the web page's labels to it. ntfy's dialect keeps its own spelling rules in
``api/compat/ntfy_params.py``."""

from __future__ import annotations

PRIORITY_LABELS = {1: "min", 2: "low", 3: "default", 4: "high", 5: "urgent"}
#: names accepted on input: the labels, and the aliases ``normal`` and ``max``
PRIORITY_NAMES = {**{label: n for n, label in PRIORITY_LABELS.items()}, "normal": 3, "max": 5}
