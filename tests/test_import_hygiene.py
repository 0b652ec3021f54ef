"""The core imports no web, CLI or TUI framework; the client (the CLI send path) stays light.

Each check imports in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

CORE = "notifyd.core, notifyd.core.sqlite.store, notifyd.core.hub, notifyd.core.inbox"


def loaded_after(imports: str) -> set[str]:
    """Top-level names in ``sys.modules`` after ``import <imports>`` in a new interpreter."""
    code = (
        f"import {imports}; import sys, json; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_imports_no_web_or_tui_framework() -> None:
    loaded = loaded_after(CORE)
    assert "notifyd" in loaded
    assert not loaded & {"fastapi", "starlette", "textual", "hypercorn"}


def test_core_without_the_sqlite_store_imports_no_click() -> None:
    loaded = loaded_after("notifyd.core, notifyd.core.hub, notifyd.core.inbox")
    assert not loaded & {"fastapi", "starlette", "click", "textual"}


def test_core_with_the_sqlite_store_imports_no_click() -> None:
    assert "click" not in loaded_after(CORE)


def test_client_does_not_import_the_server_stack() -> None:
    loaded = loaded_after("notifyd.client")
    assert "httpx" in loaded
    assert not loaded & {"fastapi", "trio", "starlette", "hypercorn", "textual"}
