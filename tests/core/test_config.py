"""Configuration: file + environment, readable errors (file, key, expectation), comment-keeping writes,
and ``autotune config show | path | set``."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotune_core.cli import _build
from autotune_core.cli.common import reset_host
from autotune_core.config import (
    ENV_OVERRIDES,
    Settings,
    config_path,
    load_settings,
    parse_value,
    validate_settings,
    write_setting,
)
from autotune_core.errors import ConfigError


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("AUTOTUNE_CONFIG", str(path))
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """Run the real click group in-process with a fresh CLI host before and after."""
    monkeypatch.setenv("AUTOTUNE_LOAD_PLUGINS", "")  # built-ins are other engineers' work: keep them out

    def invoke(*args: str):
        reset_host()
        try:
            return CliRunner().invoke(_build(), list(args))
        finally:
            reset_host()

    return invoke


def test_defaults_without_a_file(cfg):
    settings = load_settings(env={})
    assert settings.model_dump() == Settings().model_dump()
    assert settings.server.port == 8765 and settings.profile == "balanced"
    assert settings.source == str(cfg)


def test_file_then_environment_then_overrides(cfg):
    cfg.write_text('profile = "fast"\n[server]\nport = 9000\n[backends.ollama]\nurl = "http://a:1"\n')
    settings = load_settings(
        env={"AUTOTUNE_PORT": "9100", "AUTOTUNE_OLLAMA_URL": "http://b:2"}, overrides={"profile": "quality"}
    )
    assert (settings.server.port, settings.backends["ollama"]["url"], settings.profile) == (
        9100,
        "http://b:2",
        "quality",
    )
    assert "AUTOTUNE_PORT" in settings.source and str(cfg) in settings.source


def test_every_environment_override_maps_to_a_real_key():
    for var, key in ENV_OVERRIDES.items():
        value = "x" if key.startswith(("backends.", "backend")) or key.endswith(("host", "api_key")) else "4096"
        if key == "profile":
            value = "fast"
        if key == "client_overrides":
            value = "tune"
        if key == "server.log_prompts":
            value = "true"
        load_settings(Path("/nonexistent/autotune.toml"), env={var: value})  # raises if the key is wrong


def test_api_key_is_kept_as_text():
    settings = load_settings(Path("/nonexistent.toml"), env={"AUTOTUNE_API_KEY": "123"})
    assert settings.server.api_key == "123"


def test_invalid_toml_names_the_file(cfg):
    cfg.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=f"invalid TOML in {cfg}"):
        load_settings(env={})


@pytest.mark.parametrize(
    "content, key, expectation",
    [
        ("[server]\nport = 70000\n", "server.port", "less than or equal to 65535"),
        ('[server]\nport = "high"\n', "server.port", "valid integer"),
        ('profile = "turbo"\n', "profile", "expected one of fast, balanced, quality"),
        ("colour = 1\n", "colour", "Extra inputs are not permitted"),
        ('[plugins]\ndisabled = "ctx-sizing"\n', "plugins.disabled", "valid list"),
        ('[server.models.llama3]\nprofil = "fast"\n', "server.models.llama3.profil", "Extra inputs"),
    ],
)
def test_invalid_values_name_file_key_and_expectation(cfg, content, key, expectation):
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(env={})
    text = str(info.value)
    assert str(cfg) in text and f"  {key}:" in text and expectation in text


def test_plugin_sections_become_plugin_settings():
    settings = validate_settings({"plugins": {"disabled": ["a"], "ctx-sizing": {"reserve": 256}}}, "t")
    assert settings.plugins.disabled == ["a"]
    assert settings.plugins.settings == {"ctx-sizing": {"reserve": 256}}


def test_per_model_overrides():
    settings = validate_settings(
        {"server": {"models": {"gemma3:270m": {"profile": "fast", "disabled": ["recall"]}}}}, "t"
    )
    assert settings.server.models["gemma3:270m"].disabled == ["recall"]


@pytest.mark.parametrize(
    "text, value",
    [("9000", 9000), ("true", True), ('"x y"', "x y"), ("plain", "plain"), ('["a", "b"]', ["a", "b"]), ("1.5", 1.5)],
)
def test_parse_value_reads_toml_literals(text, value):
    assert parse_value(text) == value


def test_write_setting_keeps_comments_and_validates_first(cfg):
    cfg.write_text("# my autotune config\n[server]\n# the port I like\nport = 9000\n")
    write_setting(cfg, "server.host", "0.0.0.0")
    write_setting(cfg, "plugins.disabled", ["recall"])
    text = cfg.read_text()
    assert "# my autotune config" in text and "# the port I like" in text
    assert tomllib.loads(text) == {"server": {"port": 9000, "host": "0.0.0.0"}, "plugins": {"disabled": ["recall"]}}
    before = cfg.read_text()
    with pytest.raises(ConfigError, match=r"server\.port"):
        write_setting(cfg, "server.port", 0)
    with pytest.raises(ConfigError, match="'port' is a value, not a table"):
        write_setting(cfg, "server.port.x", 1)
    with pytest.raises(ConfigError, match="no!"):
        write_setting(cfg, "profile", "fast", check=lambda s: (_ for _ in ()).throw(ConfigError("no!")))
    assert cfg.read_text() == before


def test_config_path_command(cfg, cli):
    result = cli("config", "path")
    assert result.exit_code == 0 and result.output.strip() == str(cfg) == str(config_path())


def test_config_show_toml_and_json_redact_secrets(cfg, cli, monkeypatch):
    cfg.write_text('[server]\napi_key = "sk-very-secret"\nport = 9001\n[backends.openai]\napi_key = "sk-2"\n')
    result = cli("config", "show")
    assert result.exit_code == 0, result.output
    assert "sk-very-secret" not in result.output and "sk-2" not in result.output
    shown = tomllib.loads(result.output)  # valid TOML
    assert shown["server"]["port"] == 9001 and shown["server"]["api_key"] == "***"
    assert shown["backends"]["openai"]["api_key"] == "***"
    assert "# not set: backend" in result.output
    monkeypatch.setenv("AUTOTUNE_PORT", "9002")
    data = json.loads(cli("config", "show", "--json").output)
    assert data["config"]["server"]["port"] == 9002 and "AUTOTUNE_PORT" in data["source"]
    assert data["config"]["server"]["api_key"] == "***" and data["config"]["backend"] is None


def test_config_show_includes_plugin_defaults(cfg, cli, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_LOAD_PLUGINS", "with-settings")
    cfg.write_text('[plugins]\nload = ["core_helpers:WithSettings"]\n[plugins.with-settings]\nlabel = "y"\n')
    data = json.loads(cli("config", "show", "--json").output)
    assert data["config"]["plugins"]["with-settings"] == {"limit": 100, "label": "y"}


def test_config_set_writes_and_validates(cfg, cli):
    cfg.write_text("# keep me\n")
    result = cli("config", "set", "server.port", "9100")
    assert result.exit_code == 0 and result.output == f"set server.port = 9100 in {cfg}\n"
    assert "# keep me" in cfg.read_text() and tomllib.loads(cfg.read_text())["server"]["port"] == 9100
    bad = cli("config", "set", "server.port", "99999")
    assert isinstance(bad.exception, ConfigError)
    assert str(cfg) in str(bad.exception) and "server.port" in str(bad.exception)
    assert tomllib.loads(cfg.read_text())["server"]["port"] == 9100
    secret = cli("config", "set", "server.api_key", "sk-1")
    assert "sk-1" not in secret.output and tomllib.loads(cfg.read_text())["server"]["api_key"] == "sk-1"


def test_config_set_plugin_settings_use_the_plugins_model(cfg, cli):
    cfg.write_text('[plugins]\nload = ["core_helpers:WithSettings"]\n')
    assert cli("config", "set", "plugins.with-settings.limit", "5").exit_code == 0
    assert tomllib.loads(cfg.read_text())["plugins"]["with-settings"] == {"limit": 5}
    bad = cli("config", "set", "plugins.with-settings.limit", "0")
    assert "plugins.with-settings.limit" in str(bad.exception) and "greater than or equal to 1" in str(bad.exception)
    typo = cli("config", "set", "plugins.with-setings.limit", "5")
    assert "no plugin named 'with-setings'; did you mean 'with-settings'?" in str(typo.exception)
    none = cli("config", "set", "plugins.core.x", "1")
    assert "plugin 'core' takes no settings" in str(none.exception)
    assert tomllib.loads(cfg.read_text())["plugins"]["with-settings"] == {"limit": 5}


def test_config_errors_reach_the_user_readably(cfg):
    """Through the installed command: the message names the file, the key and what was expected."""
    cfg.write_text("[server]\nmax_concurrent = 0\n")
    env = {**os.environ, "AUTOTUNE_CONFIG": str(cfg), "AUTOTUNE_LOAD_PLUGINS": ""}
    done = subprocess.run(["autotune", "config", "show"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"error: invalid configuration in {cfg}" in done.stderr
    assert "server.max_concurrent: Input should be greater than or equal to 1 (got 0)" in done.stderr
