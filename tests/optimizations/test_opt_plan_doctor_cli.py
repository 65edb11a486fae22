"""``autotune plan`` and ``autotune doctor`` against a host with the fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from opt_support import fake, make_host

from autotune_core.cli import common, plan_cmd


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    host = make_host()
    monkeypatch.setattr(common, "_host", host)

    @click.group()
    def group() -> None:
        pass

    plan_cmd.register(group)
    return group


def test_plan_prints_every_step_advice_and_wire_options(cli: click.Group) -> None:
    out = CliRunner().invoke(cli, ["plan", "llama3.2:1b", "-m", "hello", "--system", "Be brief.", "--max-tokens", "64"])
    assert out.exit_code == 0, out.output
    for plugin in ("ctx-sizing", "ctx-buckets", "noswap-guard", "kv-precision", "keep-alive", "prefix-protect"):
        assert plugin in out.output
    assert "advice:" in out.output and "FAKE_KV_CACHE_TYPE" in out.output
    assert "wire options:" in out.output


def test_plan_json_and_file_bodies(cli: click.Group, tmp_path: Path) -> None:
    body = tmp_path / "req.json"
    body.write_text(
        json.dumps(
            {
                "model": "llama3.2:1b",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "hello"}]},
                ],
                "max_tokens": 100,
            }
        )
    )
    out = CliRunner().invoke(cli, ["plan", "llama3.2:1b", "--file", str(body), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["plan"]["max_tokens"] == 100 and data["plan"]["num_ctx"] == 1024
    assert data["backend"] == "fake" and "num_ctx=" in data["trace_compact"]
    ollama = tmp_path / "ollama.json"
    ollama.write_text(json.dumps({"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 3000}}))
    data = json.loads(CliRunner().invoke(cli, ["plan", "llama3.2:1b", "--file", str(ollama), "--json"]).output)
    assert data["plan"]["max_tokens"] == 3000 and data["plan"]["num_ctx"] == 4096


def test_plan_needs_a_backend_serving_the_model(cli: click.Group) -> None:
    out = CliRunner().invoke(cli, ["plan", "no-such-model"])
    assert out.exit_code != 0 and "reachable backend" in out.output
    out = CliRunner().invoke(cli, ["plan", "llama3.2:1b", "--backend", "nope"])
    assert out.exit_code != 0 and "no backend named" in out.output


def test_doctor_ok_and_failing(cli: click.Group, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_KV_CACHE_TYPE", raising=False)
    out = CliRunner().invoke(cli, ["doctor", "--json"])
    data = json.loads(out.output)
    assert out.exit_code == 0 and data["ok"] is True, out.output
    checks = {row["check"]: row for row in data["checks"]}
    assert checks["backend fake"]["status"] == "ok"
    assert checks["fake kv_type"]["status"] == "advice" and "FAKE_KV_CACHE_TYPE" in checks["fake kv_type"]["detail"]
    monkeypatch.setenv("FAKE_FLASH_ATTENTION", "1")
    data = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    assert {row["check"]: row for row in data["checks"]}["fake flash_attn"]["status"] == "ok"
    fake(common.get_host()).up = False
    out = CliRunner().invoke(cli, ["doctor"])
    assert out.exit_code == 1 and "no backend is reachable" in out.output


def test_plan_shows_the_clients_values_and_which_were_kept(cli: click.Group) -> None:
    args = ["plan", "llama3.2:1b", "-m", "hello", "-o", "num_ctx=8192", "-o", "num_batch=128", "--keep-alive", "5m"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "your values" in out.output and "options.num_ctx" in out.output and "kept" in out.output
    assert "proposed, kept 8192" in out.output  # ctx-sizing ran and was overruled
    data = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    values = {v["knob"]: v for v in data["client_values"]}
    assert values["num_ctx"]["kept"] and values["num_ctx"]["sent"] == 8192 == data["plan"]["num_ctx"]
    assert values["keep_alive"]["asked"] == "5m" and values["keep_alive"]["sent"] == 300.0
    assert data["wire_options"].get("num_ctx", 8192) == 8192
    bad = CliRunner().invoke(cli, ["plan", "llama3.2:1b", "-o", "num_ctx"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output
