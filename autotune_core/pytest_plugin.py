"""pytest fixtures for plugin authors (installed as the ``pytest11`` entry point ``autotune``).

Import-light on purpose: it loads in every pytest run of anyone who installs autotune, so the
host, pydantic models and the pipeline are imported inside the fixtures, never at module level.

Fixtures:

- ``autotune_host_factory(*plugins, load_entrypoints=False, config=None, settings=None, backend=None,
  **kwargs)``: a fresh host holding your plugins and the in-process fake backend, ignoring the user's
  config file (:func:`make_host` is the same outside a fixture: module-level helpers, conftests);
- ``autotune_host``: such a host with only the core and the fake backend;
- ``fake_backend``: that host's :class:`~autotune_core.testing.FakeBackend` instance;
- ``hardware_snapshot``: a 16 GiB CPU-only machine (:func:`autotune_core.testing.make_hardware`);
- ``model_architecture``: ``LLAMA_1B`` by default; parametrize indirectly with a ModelInfo or a name
  (``"llama3.2:1b"``, ``"gemma3:270m"``);
- ``autotune_plan(host, request, **fields) -> Plan``: runs one request through the real pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .config import Settings
    from .hardware import HardwareSnapshot
    from .host import PluginHost
    from .messages import ChatRequest
    from .modelinfo import ModelInfo
    from .plan import Plan
    from .testing import FakeBackend

#: the models the fake backend serves, by name
MODEL_NAMES = ("llama3.2:1b", "gemma3:270m")


@pytest.fixture
def hardware_snapshot() -> HardwareSnapshot:
    """A 16 GiB CPU-only Linux machine with 12 GiB available."""
    from .testing import make_hardware

    return make_hardware()


@pytest.fixture
def model_architecture(request: pytest.FixtureRequest) -> ModelInfo:
    """A model's architecture; ``LLAMA_1B`` unless parametrized (indirect) with a ModelInfo or a name."""
    from .modelinfo import ModelInfo
    from .testing import GEMMA_270M, LLAMA_1B

    param = getattr(request, "param", LLAMA_1B)
    if isinstance(param, ModelInfo):
        return param
    known = {info.name: info for info in (LLAMA_1B, GEMMA_270M)}
    aliases = {"llama": LLAMA_1B, "llama_1b": LLAMA_1B, "gemma": GEMMA_270M, "gemma_270m": GEMMA_270M}
    key = str(param)
    found = known.get(key) or aliases.get(key.lower())
    if found is None:
        raise pytest.UsageError(f"model_architecture: unknown model {param!r}; use one of {', '.join(known)}")
    return found


def make_host(
    *plugins: object,
    load_entrypoints: bool = False,
    config: Settings | dict[str, Any] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    backend: type[FakeBackend] | None = None,
    **kwargs: Any,
) -> PluginHost:
    """What :func:`autotune_host_factory` builds, for code that cannot take a fixture.

    ``config`` is a :class:`~autotune_core.config.Settings` or a dict shaped like the config file
    (validated the same way, ``backend = "fake"`` unless it says otherwise); ``settings`` adds
    per-plugin settings (``{"my-plugin": {"ceiling": 4096}}``) over the config's; ``backend`` is a
    :class:`~autotune_core.testing.FakeBackend` subclass to register as the fake backend instead.
    The rest (``env``, ``hardware``, ``stack``) goes to :class:`~autotune_core.host.PluginHost`;
    ``env`` defaults to ``{}`` so the developer's ``AUTOTUNE_*`` variables cannot change a result,
    ``hardware`` to :func:`~autotune_core.testing.make_hardware`'s 16 GiB machine.
    """
    from .config import Settings, validate_settings
    from .host import PluginHost
    from .testing import FakeBackendPlugin, make_hardware

    if isinstance(config, dict):
        config = validate_settings({"backend": "fake", **config}, "<autotune_host_factory config>")
    config = config if config is not None else Settings(backend="fake")
    if settings:
        merged = {**config.plugins.settings, **settings}
        config = config.model_copy(update={"plugins": config.plugins.model_copy(update={"settings": merged})})
    kwargs.setdefault("env", {})
    if kwargs.get("hardware") is None:
        kwargs["hardware"] = make_hardware()
    registrar = FakeBackendPlugin() if backend is None else _registrar(backend)
    return PluginHost(config=config, plugins=[registrar, *plugins], load_entrypoints=load_entrypoints, **kwargs)


def _registrar(backend: type[FakeBackend]) -> object:
    """A ``fake-backend`` plugin registering ``backend`` (a FakeBackend subclass) in place of FakeBackend."""
    from .markers import hookimpl

    class _Registrar:
        name = "fake-backend"

        @hookimpl
        def register_backends(self, register: Callable[[type[FakeBackend]], None]) -> None:
            register(backend)

    return _Registrar()


@pytest.fixture
def autotune_host_factory(hardware_snapshot: HardwareSnapshot) -> Callable[..., PluginHost]:
    """Build hosts holding the given plugins (plus the fake backend), without the user's config.

    ``config`` may be a :class:`~autotune_core.config.Settings` or a plain dict shaped like the
    config file (``{"plugins": {"my-plugin": {"ceiling": 4096}}}``), validated the same way;
    ``settings`` and ``backend`` as in :func:`make_host`. ``hardware`` defaults to the
    ``hardware_snapshot`` fixture (override that fixture to change every host of a test).
    """

    def build(*plugins: object, **kwargs: Any) -> PluginHost:
        kwargs.setdefault("hardware", hardware_snapshot)
        return make_host(*plugins, **kwargs)

    return build


@pytest.fixture
def autotune_host(autotune_host_factory: Callable[..., PluginHost]) -> PluginHost:
    """A host with only the core and the fake backend."""
    return autotune_host_factory()


@pytest.fixture
def fake_backend(autotune_host: PluginHost) -> FakeBackend:
    """The ``autotune_host``'s fake backend (counts loads, reloads and the plans it received)."""
    from .testing import FakeBackend

    backend = autotune_host.backend("fake")
    assert isinstance(backend, FakeBackend)
    return backend


def plan_request(host: PluginHost, request: ChatRequest | str, **fields: Any) -> Plan:
    """Run ``request`` through the host's pipeline (resolve, pre_request, the folds, reconcile) and
    return the Plan. A string becomes one user message to ``llama3.2:1b``; ``fields`` set
    ChatRequest fields (``model=``, ``max_tokens=``, ...). Works inside async tests too."""
    import asyncio
    import concurrent.futures

    from .messages import ChatRequest, Message
    from .pipeline import Pipeline

    if isinstance(request, str):
        fields.setdefault("model", MODEL_NAMES[0])
        request = ChatRequest(messages=[Message(role="user", content=request)], **fields)
    elif fields:
        request = request.model_copy(update=fields)

    async def go() -> Plan:
        return (await Pipeline(host).prepare(request)).plan

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from an async test
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def autotune_plan() -> Callable[..., Plan]:
    """``autotune_plan(host, request_or_text, **fields) -> Plan``; see :func:`plan_request`."""
    return plan_request
