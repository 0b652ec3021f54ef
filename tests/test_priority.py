"""One priority table (notifyd.core.priority): the models, the CLI and the TUI use
it, and the web page's labels are held to it here."""

from __future__ import annotations

import json
import re
from pathlib import Path

from notifyd.cli import format as clifmt
from notifyd.core import models
from notifyd.core.priority import PRIORITY_LABELS, PRIORITY_NAMES

ROOT = Path(__file__).resolve().parent.parent


def test_every_layer_uses_the_one_table() -> None:
    from notifyd.tui.widgets import event_table

    assert clifmt.PRIORITY_LABELS is PRIORITY_LABELS and clifmt.PRIORITY_NAMES is PRIORITY_NAMES
    assert models.PRIORITY_NAMES is PRIORITY_NAMES
    assert event_table.PRIORITY_NAMES == {1: "min", 2: "low", 3: "", 4: "high", 5: "urgent"}
    for name, number in PRIORITY_NAMES.items():
        assert models.parse_priority(name) == number
        assert clifmt.parse_priority(name) == number


def test_the_web_page_labels_match() -> None:
    source = (ROOT / "notifyd" / "web" / "static" / "js" / "card.js").read_text()
    match = re.search(r"const PRIORITY_NAMES = (\{[^}]*\});", source)
    assert match, "card.js no longer defines PRIORITY_NAMES"
    table = json.loads(re.sub(r"(\d+):", r'"\1":', match.group(1)))
    expected = {
        str(n): None if n == 3 else label.capitalize() for n, label in PRIORITY_LABELS.items()
    }
    assert table == expected
