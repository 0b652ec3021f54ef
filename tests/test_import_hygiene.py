"""The core is headless and self-contained; the client (the CLI send path) stays light.

Every module of ``notifyd/core`` is checked twice: by importing them all in a fresh
interpreter (so what other tests imported does not count) and by reading their
import statements, lazy ones inside functions included, so that an import that
runs only later (a plugin hook, a command) cannot hide.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import notifyd.core

ROOT = Path(__file__).resolve().parent.parent
CORE = "notifyd.core, notifyd.core.sqlite.store, notifyd.core.hub, notifyd.core.inbox"

#: libraries of the front ends (web, CLI, TUI, wire protocols) and of the bundled
#: plugins: declared by the project, but never imported by the core
NOT_IN_CORE = frozenset({
    "fastapi", "starlette", "hypercorn", "click", "textual", "httpx", "h11", "wsproto",
    "trio_websocket", "multipart", "python_multipart", "apprise", "pywebpush", "py_vapid",
})  # fmt: skip


def core_modules() -> dict[str, Path]:
    """Every module of ``notifyd.core`` (packages included) → its source file."""
    found = {"notifyd.core": Path(notifyd.core.__file__)}

    def broken(name: str) -> None:
        raise ImportError(f"cannot walk {name}")

    for info in pkgutil.walk_packages(notifyd.core.__path__, "notifyd.core.", onerror=broken):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        found[info.name] = Path(spec.origin)
    return found


def _under_type_checking(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def imports_of(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import that can run, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = _under_type_checking(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            yield node.lineno, base
            for alias in node.names:  # ``from . import outbox`` imports a module
                sub = ROOT.joinpath(*base.split("."), alias.name)
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    yield node.lineno, f"{base}.{alias.name}"


def declared_import_names() -> set[str]:
    """Top-level import names of the distributions in ``[project] dependencies``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {
        norm(re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0]) for dep in project["dependencies"]
    }
    return {
        top
        for top, dists in importlib.metadata.packages_distributions().items()
        if any(norm(d) in declared for d in dists)
    }


def loaded_after(imports: str, *, full: bool = False) -> set[str]:
    """Names in ``sys.modules`` after ``import <imports>`` in a new interpreter
    (top-level names only, unless ``full``)."""
    names = "sys.modules" if full else "{m.split('.')[0] for m in sys.modules}"
    code = f"import {imports}; import sys, json; print(json.dumps(sorted({names})))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_core_module_loads_nothing_of_the_front_ends() -> None:
    modules = core_modules()
    assert {"notifyd.core.services", "notifyd.core.outbox", "notifyd.core.config"} <= set(modules)
    loaded = loaded_after(", ".join(modules), full=True)
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & NOT_IN_CORE
    outside = sorted(
        m for m in loaded if m.startswith("notifyd.") and not m.startswith("notifyd.core")
    )
    # notifyd.config, notifyd.api, notifyd.cli*, notifyd.plugins, notifyd.tui, …
    assert outside == []


@pytest.mark.parametrize("module", sorted(core_modules()))
def test_core_module_imports_only_the_core_stdlib_and_declared_libraries(module: str) -> None:
    allowed_third_party = declared_import_names() - NOT_IN_CORE
    assert {"trio", "pydantic", "sqlite_utils", "pluggy"} <= allowed_third_party
    bad = []
    for line, name in imports_of(module, core_modules()[module]):
        top = name.split(".")[0]
        if name == "notifyd.core" or name.startswith("notifyd.core."):
            continue
        if name == "notifyd":  # the parent package itself (``__version__``)
            continue
        if top == "notifyd" or top in NOT_IN_CORE:
            bad.append(f"line {line}: {name}")
        elif top not in sys.stdlib_module_names and top not in allowed_third_party:
            bad.append(f"line {line}: {name} (neither the standard library nor declared)")
    assert bad == [], f"{module} imports outside the core: {bad}"


def test_the_core_import_graph_has_no_cycle() -> None:
    """Lazy imports count: a cycle hidden in a function is still a cycle."""
    modules = core_modules()
    graph = {
        name: {dep for _, dep in imports_of(name, path) if dep in modules and dep != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize(
    "order",
    ["notifyd.core.outbox, notifyd.core.services", "notifyd.core.services, notifyd.core.outbox"],
)
def test_services_and_outbox_import_in_either_order(order: str) -> None:
    loaded = loaded_after(order, full=True)
    assert {"notifyd.core.outbox", "notifyd.core.services"} <= loaded


def test_the_outbox_does_not_need_the_services() -> None:
    assert "notifyd.core.services" not in loaded_after("notifyd.core.outbox", full=True)


def test_core_imports_no_web_or_tui_framework() -> None:
    loaded = loaded_after(CORE)
    assert "notifyd" in loaded
    assert not loaded & {"fastapi", "starlette", "textual", "hypercorn"}


def test_core_without_the_sqlite_store_imports_no_click() -> None:
    loaded = loaded_after("notifyd.core, notifyd.core.hub, notifyd.core.inbox")
    assert not loaded & {"fastapi", "starlette", "click", "textual"}


def test_core_with_the_sqlite_store_imports_no_click() -> None:
    assert "click" not in loaded_after(CORE)


def test_config_stays_importable_for_the_front_ends() -> None:
    from notifyd import config
    from notifyd.core import config as core_config

    assert config.Config is core_config.Config
    assert config.ConfigError is core_config.ConfigError
    assert config.load_config is core_config.load_config


def test_client_does_not_import_the_server_stack() -> None:
    loaded = loaded_after("notifyd.client")
    assert "httpx" in loaded
    assert not loaded & {"fastapi", "trio", "starlette", "hypercorn", "textual"}


def test_the_send_path_does_not_import_the_server_stack() -> None:
    """What ``notifyd send`` loads: the whole command tree, then the client."""
    loaded = loaded_after("notifyd.cli.app, notifyd.client")
    assert {"click", "httpx"} <= loaded
    assert not loaded & {"pydantic", "fastapi", "starlette", "hypercorn", "trio", "textual"}


def test_the_cli_formatting_the_tui_uses_does_not_build_the_command_tree() -> None:
    loaded = loaded_after("notifyd.cli.format", full=True)
    assert "click" not in {m.split(".")[0] for m in loaded}
    assert "notifyd.cli.app" not in loaded


# -- engines are reached through the factory -------------------------------------------


def _modules_outside_the_engines() -> Iterator[tuple[str, Path]]:
    """(module name, file) of every module of notifyd, the TUI and the bundled
    plugins, except the SQLite engine's package and the factory that opens it."""
    trees = {"notifyd": ROOT / "notifyd", "notifyd.tui": ROOT / "tui",
             "notifyd.plugins": ROOT / "plugins"}  # fmt: skip
    for package, top in trees.items():
        for path in sorted(top.rglob("*.py")):
            parts = list(path.relative_to(top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            module = ".".join([package, *parts])
            if module in ENGINE_DOORS or module.startswith("notifyd.core.sqlite"):
                continue
            yield module, path


#: the modules that may import an engine: the factory
ENGINE_DOORS = frozenset({"notifyd.core.storage"})


def test_nothing_outside_the_engine_imports_it_or_builds_its_store() -> None:
    """Every store is opened by ``notifyd.core.storage.open_store`` from
    ``database_url``: the API, CLI, TUI, channels and daemon never name an engine."""
    modules = list(_modules_outside_the_engines())
    assert {"notifyd.daemon", "notifyd.deliverer", "notifyd.core.doctor", "notifyd.cli.ops",
            "notifyd.api.routes.admin", "notifyd.tui.app"} <= {m for m, _ in modules}  # fmt: skip
    bad = []
    for module, path in modules:
        for line, name in imports_of(module, path):
            if name == "notifyd.core.sqlite" or name.startswith("notifyd.core.sqlite."):
                bad.append(f"{module} line {line}: imports {name}")
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            if "SQLiteStore" in text:
                bad.append(f"{module} line {number}: names SQLiteStore")
    assert bad == [], "open stores with notifyd.core.storage.open_store: " + "; ".join(bad)
