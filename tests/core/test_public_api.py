"""The package's public names: one list for readers and linters, one table for lazy import; they must agree."""

from __future__ import annotations

import subprocess
import sys

import autotune_core


def test_all_matches_the_lazy_export_table() -> None:
    assert set(autotune_core.__all__) == {*autotune_core._EXPORTS, "__version__"}


def test_every_exported_name_resolves() -> None:
    for name in autotune_core.__all__:
        assert getattr(autotune_core, name) is not None, name


def test_importing_the_package_does_not_load_pydantic() -> None:
    code = "import sys, autotune_core; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_token_estimate_cache_agrees_with_the_uncached_count_and_stays_bounded() -> None:
    from autotune_core import tokens

    text = "def f(x):\n    return x * 42  # the answer\n" * 20
    assert tokens.estimate_tokens(text) == tokens._estimate(text) == tokens.estimate_tokens(text)
    for i in range(tokens._CACHE_MAX + 50):
        tokens.estimate_tokens(f"{i} " + "word " * 20)
    assert len(tokens._CACHE) <= tokens._CACHE_MAX
    assert all(isinstance(key, tuple) and len(key) == 2 for key in tokens._CACHE)  # no text kept
