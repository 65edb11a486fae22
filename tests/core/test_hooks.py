"""One test per hook of the contract (a meta-test at the bottom makes sure none is missing)."""

from __future__ import annotations

import asyncio
from typing import Any

import click
import pytest
from click.testing import CliRunner

from autotune_core import ChatRequest, Choice, Message, Plan, RequestRejected, fold_stage, hookimpl, hookspecs
from autotune_core.hardware import Pressure
from autotune_core.pipeline import Pipeline
from autotune_core.testing import FakeBackend

SPEC_MARK = "autotune_spec"
HOOKS = sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, SPEC_MARK))


def request(text: str = "hello", **fields: Any) -> ChatRequest:
    return ChatRequest(
        model=fields.pop("model", "llama3.2:1b"), messages=[Message(role="user", content=text)], **fields
    )


def test_hook_register_backends(autotune_host_factory):
    class Extra(FakeBackend):
        name = "extra"

    class Registrar:
        name = "registrar"

        @hookimpl
        def register_backends(self, register):
            register(Extra)

    host = autotune_host_factory(Registrar())
    assert host.backend_classes["extra"] == (Extra, "registrar")
    assert host.records["registrar"].registered == ["backend:extra"]
    assert isinstance(host.backend("extra"), Extra)


def test_hook_register_archetypes(autotune_host_factory):
    class ProfileSet:
        name = "test-profiles"
        profiles = {"cpu-16g": {"num_batch": 256}}

    class Archetypes:
        name = "archetypes"

        @hookimpl
        def register_archetypes(self, register):
            register(ProfileSet())

    host = autotune_host_factory(Archetypes())
    assert [(plugin, item.name) for plugin, item in host.archetype_sets] == [("archetypes", "test-profiles")]
    assert host.records["archetypes"].registered == ["archetypes:test-profiles"]


def test_hook_register_commands(autotune_host_factory):
    class Commands:
        name = "commands"

        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello() -> None:
                click.echo("hello from a plugin")

    group = click.Group("autotune")
    autotune_host_factory(Commands()).call("register_commands", cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and result.output == "hello from a plugin\n"


def test_hook_register_routes(autotune_host_factory):
    class Routes:
        name = "routes"

        @hookimpl
        def register_routes(self, register):
            register("/-/hello", lambda request: "hi", methods=["GET"])

    routes: list[tuple[str, list[str]]] = []
    autotune_host_factory(Routes()).call(
        "register_routes", register=lambda path, endpoint, methods: routes.append((path, methods))
    )
    assert routes == [("/-/hello", ["GET"])]


def test_hook_pre_request(autotune_host_factory, autotune_plan):
    seen: dict[str, Any] = {}

    class Edits:
        name = "edits"

        @hookimpl
        def pre_request(self, ctx, request, plan):
            seen["model"], seen["backend"] = ctx.model.name, ctx.backend_name
            plan.set(self.name, "num_keep", 24, "protect the system prompt")

    class Async:
        name = "async-edits"

        @hookimpl
        async def pre_request(self, plan):
            await asyncio.sleep(0)
            plan.set(self.name, "keep_alive", 600.0, "keep warm")

    plan = autotune_plan(autotune_host_factory(Edits(), Async()), "hello")
    assert (plan.num_keep, plan.keep_alive) == (24, 600.0)
    assert seen == {"model": "llama3.2:1b", "backend": "fake"}
    assert plan.steps("num_keep")[0].reason == "protect the system prompt"
    assert plan.sampling == {}  # the core plugin ran too, and adds no sampling the client did not ask for

    class Gate:
        name = "gate"

        @hookimpl
        def pre_request(self, request):
            if "secret" in request.messages[-1].content:
                raise RequestRejected("no secrets, please")

    with pytest.raises(RequestRejected, match="no secrets"):
        autotune_plan(autotune_host_factory(Gate()), "my secret")


def test_hook_choose_num_ctx(autotune_host_factory, autotune_plan):
    class Sizer:
        name = "sizer"

        @hookimpl
        @fold_stage("propose")
        def choose_num_ctx(self, ctx, request, plan, proposal):
            assert proposal is None and plan.prompt_tokens is not None
            return Choice(plan.prompt_tokens + 1024, "prompt + reply")

    plan = autotune_plan(autotune_host_factory(Sizer()), "hello")
    assert plan.num_ctx == plan.prompt_tokens + 1024
    assert plan.steps("num_ctx")[0].plugin == "sizer"


def test_hook_choose_kv_type(autotune_host_factory, autotune_plan):
    class Kv:
        name = "kv"

        @hookimpl
        @fold_stage("propose")
        def choose_kv_type(self, ctx, plan, proposal):
            return Choice(ctx.profile.kv_type, f"profile {ctx.profile.name}; num_ctx={plan.num_ctx}")

    class Ctx:
        name = "ctx"

        @hookimpl
        def choose_num_ctx(self, proposal):
            return Choice(4096, "fixed")

    plan = autotune_plan(autotune_host_factory(Kv(), Ctx()), "hello", profile="fast")
    chosen, reconciled = plan.steps("kv_type")
    assert (chosen.plugin, chosen.new, chosen.reason) == ("kv", "q8_0", "profile fast; num_ctx=4096")  # after num_ctx
    # the fake backend sets the KV type only through the server's environment: never sent as if it could
    assert plan.kv_type is None and "cannot honour kv_type" in reconciled.reason


def test_hook_post_response(autotune_host_factory):
    results: list[Any] = []

    class Telemetry:
        name = "telemetry"

        @hookimpl
        async def post_response(self, ctx, request, plan, result):
            results.append((plan.model, result.content, result.usage.completion_tokens))

    host = autotune_host_factory(Telemetry())

    async def go() -> None:
        pipeline = Pipeline(host)
        await pipeline.run(await pipeline.prepare(request()))
        prepared = await pipeline.prepare(request(stream=True))
        chunks = [chunk async for chunk in pipeline.stream(prepared)]
        assert chunks[-1].done

    asyncio.run(go())
    reply = "Hello from the fake backend."
    assert [r[:2] for r in results] == [("llama3.2:1b", reply), ("llama3.2:1b", reply)]
    assert results[0][2] > 0


def test_hook_on_pressure(autotune_host_factory):
    tiers: list[str] = []

    class Shrink:
        name = "shrink"

        @hookimpl
        def on_pressure(self, ctx, pressure):
            tiers.append(pressure.tier)
            return "shrunk"

    host = autotune_host_factory(Shrink())
    results = asyncio.run(host.acall("on_pressure", ctx=None, pressure=Pressure(tier="high", ram_percent=91.0)))
    assert tiers == ["high"] and results == ["shrunk"]


def test_hook_on_startup(autotune_host_factory):
    events: list[str] = []

    class Store:
        name = "store"

        @hookimpl
        async def on_startup(self, host):
            events.append(f"open {host.records['store'].name}")

    asyncio.run(autotune_host_factory(Store()).start())
    assert events == ["open store"]


def test_hook_on_shutdown(autotune_host_factory):
    events: list[str] = []

    class Store:
        name = "store"

        @hookimpl
        def on_shutdown(self, host):
            events.append("close")

    class Broken:
        name = "broken"

        @hookimpl(tryfirst=True)
        def on_shutdown(self):
            raise OSError("disk gone")

    host = autotune_host_factory(Store(), Broken())
    asyncio.run(host.stop())
    assert events == ["close"]  # a failing plugin does not stop the others from cleaning up
    assert host.records["broken"].failures == 1


def test_hook_plugin_status(autotune_host_factory):
    class Reporting:
        name = "reporting"

        @hookimpl
        def plugin_status(self):
            return {"hits": 3}

    class Quiet:
        name = "quiet"

        @hookimpl
        def plugin_status(self):
            return None

    class Broken:
        name = "broken"

        @hookimpl
        def plugin_status(self):
            raise RuntimeError("sensor gone")

    host = autotune_host_factory(Reporting(), Quiet(), Broken())
    report = host.hooks.plugin_status()
    assert report["reporting"] == {"hits": 3} and "quiet" not in report
    assert "sensor gone" in report["broken"]["error"] and host.records["broken"].failures == 1


def test_sync_call_of_an_async_impl_is_a_counted_failure(autotune_host_factory):
    class AsyncOnly:
        name = "async-only"

        @hookimpl
        async def pre_request(self, plan):
            plan.flags["ran"] = True

    host = autotune_host_factory(AsyncOnly())
    plan = Plan(model="m")
    assert host.call("pre_request", plan=plan) == []
    assert "awaitable" in host.records["async-only"].last_failure and "ran" not in plan.flags


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    """Every hook in hookspecs.py must have a ``test_hook_<name>`` in this module (datasette's rule)."""
    assert f"test_hook_{hook}" in globals(), f"add test_hook_{hook} to tests/core/test_hooks.py"


def test_the_hook_list_is_the_contract():
    assert len(HOOKS) == 12 and {"pre_request", "choose_num_ctx", "choose_kv_type", "post_response"} <= set(HOOKS)
