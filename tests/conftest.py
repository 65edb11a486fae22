"""Suite-wide isolation: every test gets its own config file and data folder, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_autotune_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("autotune-home")
    monkeypatch.setenv("AUTOTUNE_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("AUTOTUNE_DATA_DIR", str(home / "data"))
    for var in (
        "AUTOTUNE_LOAD_PLUGINS",
        "AUTOTUNE_DISABLE_PLUGINS",
        "AUTOTUNE_TRACE_PLUGINS",
        "AUTOTUNE_PROFILE",
        "AUTOTUNE_BACKEND",
        "AUTOTUNE_OLLAMA_URL",
        "AUTOTUNE_OPENAI_URL",
        "AUTOTUNE_API_KEY",
        "AUTOTUNE_ALLOWED_HOSTS",
        "AUTOTUNE_ORIGINS",
    ):
        monkeypatch.delenv(var, raising=False)


from fakes.fixtures import *  # noqa: E402,F403  (fake Ollama / OpenAI-compatible servers on loopback)
