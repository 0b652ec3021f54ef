"""Loading plugins: the built-in ones, then third-party ones from entry points.

Built-in channels are ordinary plugins loaded the same way as third-party ones.
A plugin that fails to import or register is logged and skipped: one broken
plugin never stops the daemon.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import pluggy

from . import hookspecs
from .channels import Channel

log = logging.getLogger("notifyd.plugins")

DEFAULT_PLUGINS = (
    "notifyd.plugins.webpush",
    "notifyd.plugins.apprise",
    "notifyd.plugins.mobile",
    "notifyd.plugins.upstream",
)
ENTRY_POINT_GROUP = "notifyd"


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin" | "entry point" | "test"
    hooks: list[str]
    error: str | None = None


class Plugins:
    def __init__(
        self,
        extra: list[Any] | None = None,
        load_entry_points: bool = True,
        modules: list[str] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager("notifyd")
        self.pm.add_hookspecs(hookspecs)
        self.failed: list[PluginInfo] = []
        self._sources: dict[str, str] = {}
        for name in DEFAULT_PLUGINS:
            try:
                self.pm.register(importlib.import_module(name), name=name)
                self._sources[name] = "builtin"
            except Exception as exc:  # a missing optional dependency, say
                log.error("built-in plugin %s failed to load: %s", name, exc)
                self.failed.append(PluginInfo(name, "builtin", [], str(exc)))
        if load_entry_points:
            try:
                self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            except Exception as exc:
                log.error("a third-party plugin failed to load: %s", exc)
                self.failed.append(PluginInfo("(entry points)", "entry point", [], str(exc)))
        for name in modules or []:
            try:
                self.pm.register(importlib.import_module(name), name=name)
                self._sources[name] = "config"
            except Exception as exc:
                log.error("plugin %s (from the 'plugins' setting) failed to load: %s", name, exc)
                self.failed.append(PluginInfo(name, "config", [], str(exc)))
        for plugin in extra or []:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            self.pm.register(plugin, name=name)
            self._sources[name] = "test"

    def info(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out.append(PluginInfo(name, self._sources.get(name, "entry point"), hooks))
        return sorted(out, key=lambda p: p.name) + self.failed

    def channel_kinds(self) -> dict[str, type[Channel]]:
        kinds: dict[str, type[Channel]] = {}
        for impl in self.pm.hook.register_channels.get_hookimpls():
            try:
                # pluggy types hook functions as returning ``object``
                classes = cast("Iterable[object] | None", impl.function())
                for cls in classes or []:
                    if not (isinstance(cls, type) and issubclass(cls, Channel) and cls.kind):
                        raise TypeError(f"{cls!r} is not a Channel subclass with a kind")
                    kinds.setdefault(cls.kind, cls)
            except Exception as exc:
                log.error("plugin %s: register_channels failed: %s", impl.plugin_name, exc)
        return kinds

    def call_safely(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook``; log and skip the ones that raise."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            except Exception:
                log.exception("plugin %s: hook %s failed", impl.plugin_name, hook)
