"""The docs stay true to the code: every hook is documented with its exact signature, and every
configuration key and environment override appears in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from autotune_core import PluginHost
from autotune_core.config import ENV_OVERRIDES, Settings
from autotune_core.testing import make_hardware

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOST = PluginHost(config=Settings(), env={}, hardware=make_hardware(), load_entrypoints=False)
HOOKS = sorted(name for name in dir(HOST.pm.hook) if not name.startswith("_"))


def headings(page: str) -> dict[str, str]:
    """``### name(arg, ...)`` headings of a page, by hook name."""
    text = (DOCS / page).read_text()
    return {
        m.group(1): m.group(0).lstrip("# ").strip()
        for m in re.finditer(r"^#{2,4} (\w+)\(([^)]*)\)\s*$", text, re.MULTILINE)
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    spec = getattr(HOST.pm.hook, hook).spec
    assert spec is not None
    expected = f"{hook}({', '.join(spec.argnames)})"
    documented = headings("hooks.md")
    assert hook in documented, f"docs/hooks.md needs a section '### {expected}'"
    assert documented[hook] == expected


def test_hooks_page_documents_nothing_that_does_not_exist():
    assert set(headings("hooks.md")) <= set(HOOKS)
    assert len(HOOKS) == 12


def dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += dotted_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


@pytest.mark.parametrize("key", dotted_keys(Settings))
def test_every_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in (DOCS / "configuration.md").read_text(), f"document `{key}` in docs/configuration.md"


@pytest.mark.parametrize("var", sorted(ENV_OVERRIDES))
def test_every_environment_override_is_documented(var: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert re.search(rf"`{var}`\s*\|\s*`{re.escape(ENV_OVERRIDES[var])}`", text), (
        f"add `{var}` | `{ENV_OVERRIDES[var]}` to the environment table in docs/configuration.md"
    )


@pytest.mark.parametrize("page", ["architecture.md", "hooks.md", "writing-plugins.md", "configuration.md"])
def test_core_pages_exist_and_link_files_that_exist(page: str) -> None:
    text = (DOCS / page).read_text()
    root = DOCS.parent
    for target in re.findall(r"\]\((\.\./[^)#]+|[\w-]+\.md)\)", text):
        assert (DOCS / target).resolve().exists() or (root / target).exists(), f"{page} links to missing {target}"
