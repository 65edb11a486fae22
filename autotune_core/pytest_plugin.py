"""pytest fixtures for plugin authors (installed as the ``pytest11`` entry point ``autotune``).

Import-light on purpose: it loads in every pytest run of anyone who installs autotune.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .hardware import HardwareSnapshot
    from .host import PluginHost
    from .testing import FakeBackend


@pytest.fixture
def hardware_snapshot() -> HardwareSnapshot:
    """A 16 GiB CPU-only Linux machine with 12 GiB available."""
    from .testing import make_hardware

    return make_hardware()


@pytest.fixture
def autotune_host_factory(hardware_snapshot: HardwareSnapshot) -> Iterator[Callable[..., PluginHost]]:
    """Build hosts holding the given plugins (plus the fake backend), without the user's config."""
    from .config import Settings
    from .host import PluginHost
    from .testing import FakeBackendPlugin

    def build(*plugins: object, load_entrypoints: bool = False, config: Settings | None = None,
              **kwargs: Any) -> PluginHost:
        kwargs.setdefault("hardware", hardware_snapshot)
        return PluginHost(config=config or Settings(backend="fake"), plugins=[FakeBackendPlugin(), *plugins],
                          load_entrypoints=load_entrypoints, **kwargs)

    yield build


@pytest.fixture
def autotune_host(autotune_host_factory: Callable[..., PluginHost]) -> PluginHost:
    """A host with only the core and the fake backend."""
    return autotune_host_factory()


@pytest.fixture
def fake_backend(autotune_host: PluginHost) -> FakeBackend:
    from .testing import FakeBackend

    backend = autotune_host.backend("fake")
    assert isinstance(backend, FakeBackend)
    return backend
