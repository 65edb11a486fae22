"""The one-token build probe: ``autotune doctor`` reports a build that crashes on this CPU, with the fix, and a
backend whose probe failed refuses requests instead of letting each one crash a worker."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from autotune_core.cli import common, plan_cmd
from autotune_core.config import Settings
from autotune_core.errors import BackendCrashed
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan
from autotune_core.testing import make_hardware

pytestmark = pytest.mark.embedded
pytest.importorskip("llama_cpp")

from autotune_plugins.backends.llamacpp import LlamaCppBackend, LlamaCppPlugin  # noqa: E402
from autotune_plugins.backends.llamacpp.crashes import REINSTALL  # noqa: E402
from autotune_plugins.backends.llamacpp.runner import CRASH_ENV  # noqa: E402


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    host = PluginHost(
        config=Settings(backend_order=["llamacpp"]),
        plugins=[LlamaCppPlugin()],
        load_entrypoints=False,
        hardware=make_hardware(),
    )
    monkeypatch.setattr(common, "_host", host)

    @click.group()
    def group() -> None:
        pass

    plan_cmd.register(group)
    return group


def _engine_check(cli: click.Group) -> tuple[int, dict[str, str]]:
    out = CliRunner().invoke(cli, ["doctor", "--json"])
    checks = {row["check"]: row for row in json.loads(out.output)["checks"]}
    return out.exit_code, checks["engine llamacpp"]


def test_doctor_probes_the_engine_and_reports_a_broken_build_with_the_fix(
    cli: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, check = _engine_check(cli)
    assert check["status"] == "ok" and "one token" in check["detail"]
    monkeypatch.setenv(CRASH_ENV, "at_load:SIGILL")  # what a -march=native build does on a CPU lacking AVX-512
    code, check = _engine_check(cli)
    assert code == 1 and check["status"] == "fail"
    assert "SIGILL" in check["detail"] and REINSTALL in check["detail"]


async def test_a_failed_probe_refuses_requests_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ENV, "at_load:SIGSEGV")
    backend = LlamaCppBackend({"n_ctx": 512})
    try:
        verdict = backend._probe_build(fresh=True)
        assert verdict is not None and not verdict.ok and verdict.conclusive
        availability = await backend.available()
        assert not availability.ok and REINSTALL in availability.reason and "SIGSEGV" in availability.reason
        request = ChatRequest(model="gemma3-270m", messages=[Message(role="user", content="hi")], max_tokens=2)
        with pytest.raises(BackendCrashed) as refused:
            await backend.chat(request, Plan(model="gemma3-270m", num_ctx=512))
        assert REINSTALL in refused.value.message and backend.engine.starts == 0
    finally:
        await backend.aclose()
