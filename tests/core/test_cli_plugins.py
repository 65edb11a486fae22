"""``autotune plugins``: the allow/block variables end to end through the installed command, plus
list/info/enable/disable in-process.

The built-in plugins are being written concurrently, so assertions about them only use what is
decided *before* a plugin is imported (status "disabled" and its reason), never "loaded".
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from autotune_core.cli import _build
from autotune_core.cli.common import reset_host

BUILTIN = sorted(
    ep.name
    for ep in metadata.entry_points(group="autotune")
    if ep.dist is not None and ep.dist.metadata["Name"] == "autotune"
)
try:
    metadata.distribution("autotune-example-plugin")
    EXAMPLE = "max-context-cap"
except metadata.PackageNotFoundError:
    EXAMPLE = ""
needs_example = pytest.mark.skipif(not EXAMPLE, reason="pip install ./contrib/autotune-example-plugin (CI does)")


def autotune_json(cfg: Path, **env: str) -> dict[str, dict[str, Any]]:
    """``autotune plugins list --json`` in a fresh process; plugins by name."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    full.update({"AUTOTUNE_CONFIG": str(cfg), **env})
    done = subprocess.run(
        ["autotune", "plugins", "list", "--json"], env=full, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"plugins", "hook_order", "startup_ms"}
    return {p["name"]: p for p in data["plugins"]}


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("AUTOTUNE_CONFIG", str(path))
    return path


def test_builtins_are_declared_entry_points():
    assert {"ollama", "ctx-sizing", "noswap-guard"} <= set(BUILTIN)


def test_end_to_end_disable_variable(cfg):
    plugins = autotune_json(cfg, AUTOTUNE_DISABLE_PLUGINS="ctx-sizing,core")
    assert plugins["core"]["status"] == "loaded"  # essential
    assert plugins["ctx-sizing"]["status"] == "disabled" and not plugins["ctx-sizing"]["enabled"]
    assert plugins["ctx-sizing"]["reason"] == "disabled by AUTOTUNE_DISABLE_PLUGINS"
    assert plugins["ctx-sizing"]["source"] == "builtin"
    assert plugins["noswap-guard"]["status"] != "disabled"
    if EXAMPLE:
        assert plugins[EXAMPLE]["status"] == "loaded" and plugins[EXAMPLE]["source"] == "entry point"


def test_end_to_end_empty_allow_list_loads_only_the_core(cfg):
    plugins = autotune_json(cfg, AUTOTUNE_LOAD_PLUGINS="")
    assert [n for n, p in plugins.items() if p["enabled"]] == ["core"]
    assert set(BUILTIN) <= set(plugins)
    for name in BUILTIN:
        assert plugins[name]["reason"] == "not in AUTOTUNE_LOAD_PLUGINS"


@needs_example
def test_end_to_end_allow_list_and_config_disable(cfg):
    plugins = autotune_json(cfg, AUTOTUNE_LOAD_PLUGINS=EXAMPLE)
    assert {n for n, p in plugins.items() if p["enabled"]} == {"core", EXAMPLE}
    assert plugins[EXAMPLE]["hooks"] == ["choose_num_ctx"] and plugins[EXAMPLE]["version"] == "0.1.0"
    cfg.write_text(f'# mine\n[plugins]\ndisabled = ["{EXAMPLE}"]\n')
    plugins = autotune_json(cfg, AUTOTUNE_LOAD_PLUGINS=EXAMPLE)
    assert plugins[EXAMPLE]["status"] == "disabled"
    assert plugins[EXAMPLE]["reason"] == "disabled by config [plugins] disabled"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    def invoke(*args: str, **env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_host()
        try:
            return CliRunner().invoke(_build(), list(args))
        finally:
            reset_host()

    return invoke


def test_list_table_and_order(cfg, cli):
    result = cli("plugins", "list", "--order", AUTOTUNE_LOAD_PLUGINS="")
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["NAME", "VERSION", "SOURCE", "STATUS", "TIER", "HOOKS", "FOLD", "REGISTERED", "NOTE"]
    assert result.output.splitlines()[2].split()[:5] == ["core", "-", "core", "loaded", "essential"]
    assert "  pre_request: core (tryfirst)" in result.output
    assert "  choose_num_ctx: (no implementations)" in result.output
    assert "host built in" in result.output


def test_list_json_hook_order_has_stages(cfg, cli):
    cfg.write_text('[plugins]\nload = ["core_helpers:WithSettings"]\n')
    data = json.loads(cli("plugins", "list", "--json", AUTOTUNE_LOAD_PLUGINS="with-settings").output)
    assert data["hook_order"]["pre_request"] == [
        {"position": 1, "plugin": "core", "tryfirst": True, "trylast": False},
        {"position": 2, "plugin": "with-settings", "tryfirst": False, "trylast": False},
    ]
    assert len(data["hook_order"]) == 12  # every hook of the spec, plugin_status included


def test_list_hook_filter(cfg, cli):
    data = json.loads(cli("plugins", "list", "--json", "--hook", "pre_request", AUTOTUNE_LOAD_PLUGINS="").output)
    assert [p["name"] for p in data["plugins"]] == ["core"]
    bad = cli("plugins", "list", "--hook", "pre_requets")
    assert bad.exit_code == 2 and "did you mean 'pre_request'?" in bad.output


def test_disable_enable_round_trip_keeps_comments(cfg, cli):
    cfg.write_text("# my settings\n[server]\nport = 9000  # fixed port\n")
    result = cli("plugins", "disable", "ctx-sizing")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ctx-sizing disabled (written to {cfg})")
    text = cfg.read_text()
    assert "# my settings" in text and "# fixed port" in text
    assert tomllib.loads(text)["plugins"]["disabled"] == ["ctx-sizing"]
    listed = json.loads(cli("plugins", "list", "--json").output)
    record = next(p for p in listed["plugins"] if p["name"] == "ctx-sizing")
    assert (record["status"], record["reason"]) == ("disabled", "disabled by config [plugins] disabled")
    assert "already disabled" in cli("plugins", "disable", "ctx-sizing").output
    assert cli("plugins", "enable", "ctx-sizing").output.startswith("ctx-sizing enabled")
    assert tomllib.loads(cfg.read_text())["plugins"]["disabled"] == []


def test_disable_notes_environment_precedence(cfg, cli):
    result = cli("plugins", "enable", "recall", AUTOTUNE_DISABLE_PLUGINS="recall")
    assert "AUTOTUNE_DISABLE_PLUGINS in this environment still take precedence" in result.output


def test_essential_plugins_refuse(cfg, cli):
    result = cli("plugins", "disable", "core")
    assert result.exit_code == 2
    assert "plugin 'core' is essential and cannot be disabled" in result.output
    assert not cfg.exists()


def test_unknown_names_get_a_suggestion(cfg, cli):
    result = cli("plugins", "disable", "ctx-sizng")
    assert result.exit_code == 2
    assert "no plugin named 'ctx-sizng'. Did you mean 'ctx-sizing'?" in result.output
    assert not cfg.exists()


def test_opt_in_enable_adds_to_enabled(cfg, cli):
    cfg.write_text('[plugins]\nload = ["test_cli_plugins:OptInPlugin"]\n')
    assert json.loads(cli("plugins", "info", "opt-in-demo", "--json").output)["status"] == "opt-in"
    result = cli("plugins", "enable", "opt-in-demo")
    assert result.exit_code == 0, result.output
    assert tomllib.loads(cfg.read_text())["plugins"]["enabled"] == ["opt-in-demo"]
    assert json.loads(cli("plugins", "info", "opt-in-demo", "--json").output)["status"] == "loaded"
    cli("plugins", "disable", "opt-in-demo")
    table = tomllib.loads(cfg.read_text())["plugins"]
    assert table["enabled"] == [] and table["disabled"] == ["opt-in-demo"]


class OptInPlugin:
    """A demo opt-in plugin."""

    name = "opt-in-demo"
    tier = "opt-in"


def test_info_shows_settings_schema_and_values(cfg, cli):
    cfg.write_text('[plugins]\nload = ["core_helpers:WithSettings"]\n[plugins.with-settings]\nlimit = 7\n')
    data = json.loads(cli("plugins", "info", "with-settings", "--json").output)
    assert data["source"] == "config" and data["hooks"] == ["pre_request"]
    assert data["settings"] == {"limit": 7, "label": "x"}
    assert data["settings_schema"][0] == {
        "key": "limit",
        "type": "int",
        "required": False,
        "default": 100,
        "description": "the limit",
    }
    text = cli("plugins", "info", "with-settings").output
    assert "settings ([plugins.with-settings] in the config file):" in text and "the limit" in text


@needs_example
def test_info_of_a_disabled_entry_point_still_reads_its_settings(cfg, cli):
    data = json.loads(cli("plugins", "info", EXAMPLE, "--json", AUTOTUNE_DISABLE_PLUGINS=EXAMPLE).output)
    assert data["status"] == "disabled"
    assert [row["key"] for row in data["settings_schema"]] == ["ceiling", "per_model"]


def test_list_warns_about_settings_for_no_plugin(cfg, cli):
    cfg.write_text("[plugins.ctx-sizng]\nheadroom = 1\n")
    out = cli("plugins", "list")
    assert out.exit_code == 0
    assert "warning: [plugins.ctx-sizng] in " in out.stderr and "did you mean 'ctx-sizing'?" in out.stderr
    cfg.write_text('[plugins]\ndisabled = ["recal"]\n')
    out = cli("plugins", "list", AUTOTUNE_DISABLE_PLUGINS="noswap-gaurd")
    assert "[plugins] disabled names 'recal', which is not an installed plugin; did you mean 'recall'?" in out.stderr
    assert "AUTOTUNE_DISABLE_PLUGINS names 'noswap-gaurd'" in out.stderr
