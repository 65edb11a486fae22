"""Facts in comments are cited where a reader can follow them: a page in docs/, never notes outside the
repository, and every ``docs/<page>.md#anchor`` a comment names is a heading of that page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: where a citation must resolve (shipped code, and what readers of the repository see)
CITING = ("autotune_core", "autotune_plugins", "bench", "contrib", "tests")
#: what only points at documents outside the repository
OUTSIDE = (
    "research/",
    "§",
    "backend-knobs",
    "seed-autotune",
    "field-2026",
    "peers-and-user",
    "knobs.md",
    "/work/shared",
)
CITATION = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
LINK = re.compile(r"\]\((?:([\w-]+\.md))?#([\w-]+)\)")


def python_files(*tops: str, patterns: tuple[str, ...] = ("*.py",)) -> list[Path]:
    return sorted(
        p for top in tops for pattern in patterns for p in (ROOT / top).rglob(pattern) if ".venv" not in p.parts
    )


#: shipped code and data (the bundled profiles' ``source`` strings reach users in traces)
SHIPPED = python_files("autotune_core", "autotune_plugins", patterns=("*.py", "*.toml"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", (DOCS / page).read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_slug_follows_github() -> None:
    assert slug("Ollama's OpenAI layer") == "ollamas-openai-layer"
    assert slug("KV-cache size formula") == "kv-cache-size-formula"
    assert slug("num_keep reserve") == "num_keep-reserve"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_cites_nothing_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    found = [word for word in OUTSIDE if word in text]
    assert not found, f"{path.relative_to(ROOT)} cites {found}: cite docs/backend-facts.md or state the fact"


def citations() -> list[tuple[str, str, str]]:
    out = []
    for path in python_files(*CITING, patterns=("*.py", "*.toml")):
        for m in CITATION.finditer(path.read_text()):
            out.append((str(path.relative_to(ROOT)), m.group(1), m.group(2)))
    return out


def test_code_cites_the_facts_page() -> None:
    """The page exists for a reason: the code's facts point at it (a rewrite that drops them all fails)."""
    assert sum(page == "backend-facts.md" for _, page, _ in citations()) >= 20


@pytest.mark.parametrize(("where", "page", "anchor"), citations(), ids=lambda v: str(v))
def test_every_cited_anchor_is_a_heading(where: str, page: str, anchor: str) -> None:
    assert (DOCS / page).exists(), f"{where} cites docs/{page}, which does not exist"
    assert anchor in anchors(page), f"{where} cites docs/{page}#{anchor}: no such heading"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_into_the_facts_page_resolve(page: str) -> None:
    """Links from any page into backend-facts.md, and its links to its own sections, name real headings."""
    for m in LINK.finditer((DOCS / page).read_text()):
        target = m.group(1) or page
        if target == "backend-facts.md":
            assert m.group(2) in anchors(target), f"docs/{page} links to {target}#{m.group(2)}: no such heading"


def test_facts_page_is_linked() -> None:
    assert "docs/backend-facts.md" in (ROOT / "README.md").read_text()
    assert "backend-facts.md" in (DOCS / "architecture.md").read_text()
