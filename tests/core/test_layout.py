"""docs/architecture.md's layout lists every core module and package and every first-party plugin, and nothing
that does not exist; imports flow one way (the core never imports a plugin)."""

from __future__ import annotations

import re
from pathlib import Path

import autotune_core
import autotune_plugins

CORE = Path(autotune_core.__file__).parent
PLUGINS = Path(autotune_plugins.__file__).parent
DOC = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
LAYOUT = DOC[DOC.index("## Layout") :]
LAYOUT = LAYOUT[LAYOUT.index("```") + 3 :]
LAYOUT = LAYOUT[: LAYOUT.index("```")]
LISTED = set(re.findall(r"[\w.]+/?", LAYOUT))


def _entries(root: Path) -> set[str]:
    modules = {p.name for p in root.glob("*.py")}
    packages = {p.name + "/" for p in root.iterdir() if (p / "__init__.py").exists()}
    return modules | packages


def test_every_core_module_and_package_is_listed() -> None:
    missing = _entries(CORE) - LISTED
    assert not missing, f"add to docs/architecture.md's layout: {sorted(missing)}"


def test_every_first_party_plugin_is_listed() -> None:
    missing = _entries(PLUGINS) - {"__init__.py"} - LISTED
    assert not missing, f"add to docs/architecture.md's layout: {sorted(missing)}"


def test_the_plugins_install_under_their_own_name() -> None:
    assert PLUGINS.name == "autotune_plugins"  # a folder of that name in the repo, no setup.py remapping


def test_the_core_never_imports_a_plugin() -> None:
    offenders = [
        str(p.relative_to(CORE))
        for p in CORE.rglob("*.py")
        if re.search(r"^\s*(from|import) autotune_plugins", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []
