"""PluginHost: discovery order, toggles, tiers, fault isolation at load time, no global state."""

from __future__ import annotations

from importlib import metadata

import pytest
from core_helpers import Misspelled, Recorder, WithSettings

from autotune_core import PluginHost, hookimpl
from autotune_core.config import Settings, validate_settings
from autotune_core.errors import ConfigError, PluginError
from autotune_core.testing import FakeBackend, FakeBackendPlugin, make_hardware


def ep(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group="autotune")


@pytest.fixture
def fake_eps(monkeypatch: pytest.MonkeyPatch):
    """Replace the installed `autotune` entry points with a controlled set."""

    def install(*eps: metadata.EntryPoint) -> None:
        monkeypatch.setattr(metadata, "entry_points", lambda **kw: list(eps) if kw.get("group") == "autotune" else [])

    return install


def host(
    *plugins: object, env: dict[str, str] | None = None, config: Settings | None = None, load_entrypoints: bool = True
) -> PluginHost:
    """A bare PluginHost (entry points on, no fake backend): these tests are about discovery itself."""
    return PluginHost(
        config=config or Settings(),
        plugins=plugins,
        env=env or {},
        hardware=make_hardware(),
        load_entrypoints=load_entrypoints,
    )


def test_discovery_order_core_then_sorted_entry_points_then_config_then_programmatic(fake_eps):
    fake_eps(ep("zeta", "core_helpers:ConfigLoaded"), ep("alpha", "core_helpers:WithSettings"))
    config = validate_settings({"plugins": {"load": ["core_helpers:Misspelled"]}}, "t")
    with pytest.raises(PluginError, match="misspelled"):  # config-listed plugins are strict
        host(config=config)
    config = validate_settings({"plugins": {"load": ["core_helpers:Recorder"]}}, "t")
    with pytest.raises(PluginError):  # Recorder needs a name argument: cannot be built from a spec
        host(config=config)
    calls: list[tuple[str, str]] = []
    h = host(Recorder("prog", calls), config=validate_settings({"plugins": {"load": []}}, "t"))
    assert list(h.records) == ["core", "alpha", "zeta", "prog"]
    assert [h.records[n].source for n in h.records] == ["core", "entry point", "entry point", "programmatic"]
    # pluggy calls the last registered first; the host keeps that (LIFO) order, core is tryfirst
    assert h.hook_order("pre_request") == ["core", "prog", "zeta", "alpha"]


def test_config_load_spec_registers_with_source_config():
    config = validate_settings({"plugins": {"load": ["core_helpers:ConfigLoaded"]}}, "t")
    h = host(config=config, load_entrypoints=False)
    record = h.records["config-loaded"]
    assert (record.source, record.module, record.status) == ("config", "core_helpers:ConfigLoaded", "loaded")
    with pytest.raises(PluginError, match="cannot load plugin 'nowhere:Thing'"):
        host(config=validate_settings({"plugins": {"load": ["nowhere:Thing"]}}, "t"), load_entrypoints=False)


def test_blocked_entry_points_are_never_imported(fake_eps):
    fake_eps(ep("broken", "module_that_does_not_exist:Plugin"), ep("fine", "core_helpers:ConfigLoaded"))
    h = host()
    assert h.records["broken"].status == "error" and "import failed" in h.records["broken"].reason
    h = host(env={"AUTOTUNE_DISABLE_PLUGINS": "broken"})
    assert h.records["broken"].status == "disabled"  # not "error": blocked before import
    assert h.records["broken"].reason == "disabled by AUTOTUNE_DISABLE_PLUGINS"
    assert h.records["fine"].status == "loaded"


@pytest.mark.parametrize(
    "env, loaded",
    [
        ({}, {"core", "a", "b"}),
        ({"AUTOTUNE_LOAD_PLUGINS": ""}, {"core"}),
        ({"AUTOTUNE_LOAD_PLUGINS": "b"}, {"core", "b"}),
        ({"AUTOTUNE_LOAD_PLUGINS": " a , b "}, {"core", "a", "b"}),
        ({"AUTOTUNE_DISABLE_PLUGINS": "a,core"}, {"core", "b"}),  # core is essential: cannot be blocked
        ({"AUTOTUNE_LOAD_PLUGINS": "a,b", "AUTOTUNE_DISABLE_PLUGINS": "a"}, {"core", "b"}),
    ],
)
def test_allow_and_block_lists(fake_eps, env, loaded):
    fake_eps(ep("a", "core_helpers:ConfigLoaded"), ep("b", "core_helpers:WithSettings"))
    h = host(env=env)
    assert {name for name, r in h.records.items() if r.enabled} == loaded
    for name in {"a", "b"} - loaded:
        assert h.records[name].status == "disabled"
        assert "AUTOTUNE_" in h.records[name].reason


def test_config_disabled_list_and_its_reason(fake_eps):
    fake_eps(ep("a", "core_helpers:ConfigLoaded"))
    h = host(config=validate_settings({"plugins": {"disabled": ["a", "core"]}}, "t"))
    assert h.records["a"].status == "disabled"
    assert h.records["a"].reason == "disabled by config [plugins] disabled"
    assert h.records["core"].enabled


class OptIn:
    """An opt-in plugin."""

    name = "opt"
    tier = "opt-in"

    @hookimpl
    def pre_request(self, plan):
        plan.flags["opt"] = True


def test_opt_in_tier_needs_enabling():
    assert host(OptIn(), load_entrypoints=False).records["opt"].status == "opt-in"
    enabled = validate_settings({"plugins": {"enabled": ["opt"]}}, "t")
    assert host(OptIn(), config=enabled, load_entrypoints=False).records["opt"].status == "loaded"
    allowed = host(OptIn(), env={"AUTOTUNE_LOAD_PLUGINS": "opt"}, load_entrypoints=False)
    assert allowed.records["opt"].status == "loaded"


def test_only_the_core_can_be_essential():
    class Pretender:
        name = "pretender"
        tier = "essential"

    class Odd:
        name = "odd"
        tier = "sometimes"

    h = host(Pretender(), Odd(), load_entrypoints=False)
    assert h.records["pretender"].tier == "default"
    assert h.records["odd"].tier == "default"
    assert h.records["core"].tier == "essential"


def test_unknown_hook_fails_loudly_for_programmatic_and_is_an_error_for_entry_points(fake_eps):
    with pytest.raises(PluginError, match="choose_num_cxt"):
        host(Misspelled(), load_entrypoints=False)
    fake_eps(ep("misspelled", "core_helpers:Misspelled"))
    h = host()
    record = h.records["misspelled"]
    assert record.status == "error" and "choose_num_cxt" in record.reason
    assert not h.pm.has_plugin("misspelled")


def test_wrong_argument_name_fails_loudly():
    class BadArgs:
        name = "bad-args"

        @hookimpl
        def pre_request(self, ctx, requestt):
            pass

    with pytest.raises(PluginError, match="requestt"):
        host(BadArgs(), load_entrypoints=False)


def test_wrappers_are_refused():
    class Wrapper:
        name = "wrapper"

        @hookimpl(wrapper=True)
        def pre_request(self, plan):
            return (yield)

    with pytest.raises(PluginError, match="wrapper"):
        host(Wrapper(), load_entrypoints=False)


def test_duplicate_names_are_refused():
    with pytest.raises(PluginError, match="already registered"):
        host(Recorder("same"), Recorder("same"), load_entrypoints=False)


def test_a_plugin_that_fails_to_start_is_an_error_not_a_crash(fake_eps):
    fake_eps(ep("explodes", "core_helpers:Recorder"))  # Recorder() needs an argument
    h = host()
    assert h.records["explodes"].status == "error"
    assert "failed to start" in h.records["explodes"].reason


def test_registrations_are_recorded_and_failures_isolated():
    class BadRegistrar:
        name = "bad-registrar"

        @hookimpl
        def register_backends(self, register):
            register(object)  # not a Backend subclass

    class Raiser:
        name = "raiser"

        @hookimpl
        def register_archetypes(self, register):
            raise RuntimeError("profile file missing")

    h = host(FakeBackendPlugin(), BadRegistrar(), Raiser(), load_entrypoints=False)
    assert h.records["fake-backend"].registered == ["backend:fake"]
    assert isinstance(h.backend("fake"), FakeBackend)
    assert h.backend("fake") is h.backend("fake")
    assert h.records["bad-registrar"].failures == 1 and "not a Backend" in h.records["bad-registrar"].last_failure
    assert h.records["raiser"].failures == 1 and "profile file missing" in h.records["raiser"].last_failure
    with pytest.raises(PluginError, match="no backend named 'nope'; registered: fake"):
        h.backend("nope")


def test_plugin_settings_are_validated_with_file_and_key():
    config = validate_settings({"plugins": {"with-settings": {"limit": 0}}}, "/etc/autotune.toml")
    with pytest.raises(ConfigError) as info:
        host(WithSettings(), config=config, load_entrypoints=False)
    text = str(info.value)
    assert "/etc/autotune.toml" in text and "plugins.with-settings.limit" in text
    assert "greater than or equal to 1" in text
    good = validate_settings({"plugins": {"with-settings": {"limit": 7}}}, "t")
    h = host(WithSettings(), config=good, load_entrypoints=False)
    assert h.plugin_settings("with-settings").limit == 7  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"plugins\.core\.x"):  # a plugin without settings accepts none
        host(config=validate_settings({"plugins": {"core": {"x": 1}}}, "t"), load_entrypoints=False)


def test_hosts_are_independent():
    calls: list[tuple[str, str]] = []
    one = host(Recorder("only-in-one", calls), load_entrypoints=False)
    two = host(load_entrypoints=False)
    assert one.pm is not two.pm
    assert "only-in-one" in one.records and "only-in-one" not in two.records
    assert one.hook_order("pre_request") == ["core", "only-in-one"]
    assert two.hook_order("pre_request") == ["core"]
    one.record_failure("core", "pre_request", RuntimeError("x"))
    assert one.records["core"].failures == 1 and two.records["core"].failures == 0


def test_environment_is_the_hosts_own(monkeypatch):
    """``env=`` is what the host sees, also when it loads the config file itself."""
    monkeypatch.setenv("AUTOTUNE_LOAD_PLUGINS", "")
    monkeypatch.setenv("AUTOTUNE_PROFILE", "fast")
    h = PluginHost(plugins=[], env={"AUTOTUNE_PROFILE": "quality"}, load_entrypoints=False)
    assert h.config.profile == "quality"
    assert h._allow is None


def test_server_stack_limits_request_hooks():
    calls: list[tuple[str, str]] = []
    config = validate_settings({"server": {"plugins": ["in-stack"]}}, "t")
    h = host(Recorder("in-stack", calls), Recorder("off-stack", calls), config=config, load_entrypoints=False)
    from autotune_core.plan import Plan

    h.call("pre_request", plan=Plan(model="m"))
    assert calls == [("in-stack", "pre_request")]
    assert h.enabled("in-stack") and not h.enabled("off-stack") and h.enabled("core")


def test_trace_env_prints_each_call(capsys):
    h = PluginHost(
        config=Settings(), plugins=[Recorder("traced")], env={"AUTOTUNE_TRACE_PLUGINS": "1"}, load_entrypoints=False
    )
    from autotune_core.plan import Plan

    h.call("pre_request", plan=Plan(model="m"))
    assert "autotune: pre_request -> traced" in capsys.readouterr().err
    quiet = host(Recorder("quiet"), load_entrypoints=False)
    quiet.call("pre_request", plan=Plan(model="m"))
    assert "autotune:" not in capsys.readouterr().err


def test_startup_is_measured():
    h = host(load_entrypoints=False)
    assert 0 < h.startup_ms < 5000
