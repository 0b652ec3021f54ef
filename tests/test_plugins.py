"""The plugin system: every hook is exercised, plugins can add commands, and the
listing shows where each plugin came from."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import memory_plugin

from notifyd.core import hookspecs
from notifyd.core.plugins import Plugins

TESTS = str(Path(__file__).parent)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    env.update(PYTHONPATH=TESTS, NOTIFYD_PLUGINS="memory_plugin,bad_plugins")
    return subprocess.run([sys.executable, "-m", "notifyd", *args], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def test_every_hook_is_implemented_by_a_plugin_the_tests_load() -> None:
    hooks = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "notifyd_spec")}  # fmt: skip
    assert hooks == {"register_channels", "register_commands", "register_routes", "startup"}
    manager = Plugins(extra=[memory_plugin], modules=["bad_plugins"])
    implemented = {
        impl_name
        for _, plugin in manager.pm.list_name_plugin()
        for impl_name in (h.name for h in manager.pm.get_hookcallers(plugin) or [])
    }
    assert hooks <= implemented


def test_plugins_add_commands_and_are_listed() -> None:
    r = _cli("memory-sent", "/nonexistent")
    assert r.returncode == 0 and r.stdout.strip() == "0"
    r = _cli("plugins", "--json")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    sources = {p["name"]: p["source"] for p in listing["plugins"]}
    assert sources["notifyd.plugins.webpush"] == "builtin"
    assert sources["memory_plugin"] == "config"
    assert {"apprise", "webpush", "memory", "explosive"} <= set(listing["channel_kinds"])
