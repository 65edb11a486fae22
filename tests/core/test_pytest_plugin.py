"""The pytest plugin shipped to plugin authors (``pytest11: autotune``): its fixtures, and that it
stays import-light for everyone who merely has autotune installed."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import autotune_core.pytest_plugin as pytest_plugin
from autotune_core import Choice, PluginHost, hookimpl
from autotune_core.hardware import HardwareSnapshot
from autotune_core.modelinfo import ModelInfo
from autotune_core.plan import Plan
from autotune_core.testing import GEMMA_270M, LLAMA_1B, FakeBackend

ROOT = Path(__file__).resolve().parents[2]


def test_declared_as_pytest11_entry_point(pytestconfig):
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert eps.get("autotune") == "autotune_core.pytest_plugin"
    assert pytestconfig.pluginmanager.has_plugin("autotune")


def test_module_level_imports_are_light():
    """Heavy modules (host, pydantic models, pipeline) are imported inside fixtures only."""
    tree = ast.parse(Path(pytest_plugin.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module or "")
    assert top <= {"__future__", "collections.abc", "typing", "pytest"}


def test_autotune_host_has_core_and_fake_backend(autotune_host):
    assert isinstance(autotune_host, PluginHost)
    assert [n for n, r in autotune_host.records.items() if r.enabled] == ["core", "fake-backend"]
    assert autotune_host.config.backend == "fake"


def test_fake_backend_is_the_hosts(autotune_host, fake_backend):
    assert isinstance(fake_backend, FakeBackend) and autotune_host.backend("fake") is fake_backend


def test_hardware_snapshot(hardware_snapshot, autotune_host):
    assert isinstance(hardware_snapshot, HardwareSnapshot)
    assert hardware_snapshot.ram_total_bytes == 16 * 1024**3
    assert autotune_host.hardware is hardware_snapshot


def test_model_architecture_default(model_architecture):
    assert model_architecture is LLAMA_1B


@pytest.mark.parametrize(
    "model_architecture, expected",
    [("gemma3:270m", GEMMA_270M), ("llama", LLAMA_1B), (GEMMA_270M, GEMMA_270M)],
    indirect=["model_architecture"],
)
def test_model_architecture_parametrized(model_architecture, expected):
    assert isinstance(model_architecture, ModelInfo) and model_architecture is expected


class Sized:
    name = "sized"

    @hookimpl
    def choose_num_ctx(self, proposal):
        return Choice(3000, "sized")


def test_factory_and_plan_helper(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(Sized(), config={"profile": "fast"})
    plan = autotune_plan(host, "hello there")
    assert isinstance(plan, Plan)
    assert (plan.model, plan.backend, plan.profile, plan.num_ctx) == ("llama3.2:1b", "fake", "fast", 3000)
    assert autotune_plan(host, "hi", model="gemma3:270m").model == "gemma3:270m"


def test_factory_hosts_are_independent(autotune_host_factory):
    one, two = autotune_host_factory(Sized()), autotune_host_factory()
    assert "sized" in one.records and "sized" not in two.records


def test_factory_ignores_the_developers_environment(autotune_host_factory, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_TRACE_PLUGINS", "1")
    monkeypatch.setenv("AUTOTUNE_PROFILE", "quality")
    host = autotune_host_factory(Sized())
    assert host.env == {} and not host.trace_hooks and host.config.profile == "balanced"


def test_factory_settings_merge_over_the_configs(autotune_host_factory):
    host = autotune_host_factory(
        config={"plugins": {"mine": {"a": 1}, "other": {"b": 2}}}, settings={"mine": {"a": 3}, "new": {"c": 4}}
    )
    assert host.config.plugins.settings == {"mine": {"a": 3}, "other": {"b": 2}, "new": {"c": 4}}
    assert host.config.backend == "fake"


def test_factory_backend_replaces_the_fake(autotune_host_factory, autotune_plan):
    class Silent(FakeBackend):
        def __init__(self, settings=None):
            super().__init__(settings)
            self.reply = "shh"

    host = autotune_host_factory(backend=Silent)
    assert type(host.backend("fake")) is Silent
    assert [n for n, r in host.records.items() if r.enabled] == ["core", "fake-backend"]
    assert autotune_plan(host, "hi").backend == "fake"


def test_make_host_is_the_factory_outside_a_fixture(autotune_host_factory, hardware_snapshot):
    """Module-level helpers and conftests get the same host; only the hardware default differs in identity."""
    mine, theirs = pytest_plugin.make_host(Sized()), autotune_host_factory(Sized())
    assert list(mine.records) == list(theirs.records) == ["core", "fake-backend", "sized"]
    assert mine.env == theirs.env == {} and mine.config == theirs.config
    assert mine.hardware == hardware_snapshot and theirs.hardware is hardware_snapshot
    assert pytest_plugin.make_host(load_entrypoints=True).records.keys() > {"core", "fake-backend"}


async def test_plan_helper_works_inside_async_tests(autotune_host_factory, autotune_plan):
    await asyncio.sleep(0)
    assert autotune_plan(autotune_host_factory(Sized()), "hello").num_ctx == 3000


def test_plan_helper_rejects_unknown_models(autotune_host, autotune_plan):
    from autotune_core.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match=r"available: gemma3:270m, llama3\.2:1b"):
        autotune_plan(autotune_host, "hi", model="nope")


@pytest.mark.skipif(not (ROOT / "contrib/autotune-example-plugin/tests").is_dir(), reason="no contrib package")
def test_the_example_plugins_own_suite_passes_with_these_fixtures():
    """The contrib package's tests use only these fixtures; run them as its author would."""
    pytest.importorskip("autotune_example_plugin", reason="pip install ./contrib/autotune-example-plugin")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            str(ROOT / "contrib/autotune-example-plugin"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "contrib/autotune-example-plugin",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
