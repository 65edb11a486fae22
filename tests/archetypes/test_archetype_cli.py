"""``autotune hardware`` and ``autotune profiles ...`` through click, on a host we control."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from archetype_helpers import SetsPlugin, profile_set, replay
from click.testing import CliRunner

from autotune_core.cli import common, hardware_cmd
from autotune_core.host import PluginHost
from autotune_plugins.archetypes.apply import AutoTunePlugin
from autotune_plugins.archetypes.bundled import BundledProfilesPlugin

VENDOR = profile_set(
    "vendor", {"nvidia-ada-24gb": {"llamacpp": {"ubatch_size": 2048}}}, priority=50, source="vendor lab"
)


@pytest.fixture
def cli_for(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    def build(host: PluginHost) -> click.Group:
        monkeypatch.setattr(common, "_host", host)

        @click.group()
        def cli() -> None:
            pass

        hardware_cmd.register(cli)
        host.call("register_commands", cli=cli)
        return cli

    yield build
    common.reset_host()


def test_hardware_json_shows_archetype_and_every_override_with_origin(
    tmp_path: Path, cli_for, autotune_host_factory: Any
) -> None:
    host = autotune_host_factory(
        BundledProfilesPlugin(),
        AutoTunePlugin(),
        SetsPlugin("vendor-plugin", VENDOR),
        hardware=replay(tmp_path, nvidia="rtx4090.csv"),
    )
    out = CliRunner().invoke(cli_for(host), ["hardware", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["archetype"]["id"] == "nvidia-ada-24gb" and report["auto_tune"] == "enabled"
    assert report["hardware"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"
    ubatch = next(o for o in report["overrides"]["llamacpp"] if o["knob"] == "llamacpp.ubatch_size")
    assert (ubatch["value"], ubatch["set"], ubatch["plugin"]) == (2048, "vendor", "vendor-plugin")
    assert ubatch["overrides"][0]["value"] == 1024 and "bundled v1" in ubatch["overrides"][0]["origin"]
    ctx = next(o for o in report["overrides"]["common"] if o["knob"] == "num_ctx")
    assert ctx["value"] == 32768 and "docs/backend-facts.md#ollama-default-context" in ctx["source"]
    text = CliRunner().invoke(cli_for(host), ["hardware"]).output
    assert "nvidia-ada-24gb" in text and "overrides 1024 from archetype nvidia-ada-24gb" in text


def test_hardware_says_when_auto_tune_is_off(tmp_path: Path, cli_for, autotune_host_factory: Any) -> None:
    host = autotune_host_factory(
        load_entrypoints=True,
        config={"plugins": {"disabled": ["auto-tune"]}},
        hardware=replay(tmp_path, root="x86_cpu_only"),
        env={"AUTOTUNE_LOAD_PLUGINS": "archetype-profiles,auto-tune"},
    )
    report = json.loads(CliRunner().invoke(cli_for(host), ["hardware", "--json"]).output)
    assert report["auto_tune"] == "disabled" and report["archetype"]["id"] == "cpu-x86-32gb"
    assert "nothing below is applied" in CliRunner().invoke(cli_for(host), ["hardware"]).output


def test_profiles_list_show_and_lemonade(tmp_path: Path, cli_for, autotune_host_factory: Any) -> None:
    host = autotune_host_factory(BundledProfilesPlugin(), hardware=replay(tmp_path, root="strix_halo_128gb"))
    cli = cli_for(host)
    listed = json.loads(CliRunner().invoke(cli, ["profiles", "list", "--json"]).output)
    assert listed["archetype"] == "amd-strix-halo-128gb"
    assert [r["id"] for r in listed["profiles"] if r["match"]] == ["amd-strix-halo-128gb"]
    shown = json.loads(CliRunner().invoke(cli, ["profiles", "show", "amd-strix-halo-128gb", "--lemonade"]).output)
    assert shown[0]["profile"]["strix-halo-128gb"]["llamacpp_backend"] == "vulkan"
    missing = CliRunner().invoke(cli, ["profiles", "show", "no-such"])
    assert missing.exit_code != 0 and "no profile 'no-such'" in missing.output


def test_profiles_update_without_url_explains(tmp_path: Path, cli_for, autotune_host_factory: Any) -> None:
    host = autotune_host_factory(BundledProfilesPlugin(), hardware=replay(tmp_path, root="x86_cpu_only"))
    result = CliRunner().invoke(cli_for(host), ["profiles", "update"])
    assert result.exit_code != 0 and "[archetypes] url" in result.output


def test_bench_merge_learn_end_to_end_on_the_fake_backend(tmp_path: Path, cli_for, autotune_host_factory: Any) -> None:
    host = autotune_host_factory(BundledProfilesPlugin(), hardware=replay(tmp_path, root="x86_cpu_only"))
    cli = cli_for(host)
    out = tmp_path / "bench.json"
    ran = CliRunner().invoke(
        cli,
        [
            "bench",
            "--backend",
            "fake",
            "--model",
            "llama3.2:1b",
            "--submit-file",
            str(out),
            "--budget",
            "20",
            "--no-learn",
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert json.loads(out.read_text())["archetype"] == "cpu-x86-32gb"
    merged = tmp_path / "profile.json"
    result = CliRunner().invoke(cli, ["profiles", "merge", str(out), "-o", str(merged)])
    assert result.exit_code == 0, result.output
    assert "cpu-x86-32gb" in json.loads(merged.read_text())["profiles"]
    learned = CliRunner().invoke(cli, ["profiles", "learn", str(out)], input="y\n")
    assert learned.exit_code == 0 and "saved to" in learned.output
    declined = CliRunner().invoke(cli, ["profiles", "learn", str(out)], input="n\n")
    assert "saved to" not in declined.output
