"""What the product imports is what pyproject.toml declares (a package that only
arrives as someone else's dependency can vanish in an upgrade), and the versions
pinned in constraints.txt satisfy those declarations."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("notifyd", "plugins", "tui")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_normal(Requirement(r).name): Requirement(r) for r in reqs}


def _imported_top_level() -> dict[str, str]:
    """Top-level module name → the first file that imports it, for third-party modules."""
    found: dict[str, str] = {}
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top in sys.stdlib_module_names or top == "notifyd":
                        continue
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared() -> None:
    declared = _declared()
    dists = packages_distributions()
    missing = []
    for module, where in _imported_top_level().items():
        names = {_normal(d) for d in dists.get(module, [module])}
        if not names & declared.keys():
            missing.append(f"{module} (imported in {where}; from {sorted(names)})")
    assert not missing, "imported but not in [project].dependencies: " + ", ".join(missing)


def test_constraints_satisfy_the_declared_ranges() -> None:
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[_normal(name)] = Version(version)
    for group in (None, "test"):
        for name, req in _declared(group).items():
            assert name in pinned, f"{name} is declared but not pinned in constraints.txt"
            assert pinned[name] in req.specifier, f"{name}=={pinned[name]} is outside {req}"
