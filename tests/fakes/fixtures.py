"""Pytest fixtures for the fake servers.

Import them into ``tests/conftest.py``::

    from fakes.fixtures import *  # noqa: F403

Every fixture is function-scoped (start-up takes a few milliseconds) and closes its server at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fake_ollama import FakeOllama
from .fake_openai import FLAVOURS, FakeOpenAI

__all__ = [
    "any_fake_openai",
    "fake_lemonade",
    "fake_llama_server",
    "fake_lmstudio",
    "fake_ollama",
    "fake_ollama_factory",
    "fake_openai",
    "fake_openai_factory",
    "fake_vllm",
]


@pytest.fixture
def fake_ollama_factory() -> Iterator[Callable[..., FakeOllama]]:
    """``make(**kw) -> FakeOllama`` (started); all closed at teardown."""
    made: list[FakeOllama] = []

    def make(**kw: Any) -> FakeOllama:
        fake = FakeOllama(**kw)
        fake.start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


@pytest.fixture
def fake_openai_factory() -> Iterator[Callable[..., FakeOpenAI]]:
    """``make(flavour="generic", **kw) -> FakeOpenAI`` (started); all closed at teardown."""
    made: list[FakeOpenAI] = []

    def make(flavour: str = "generic", **kw: Any) -> FakeOpenAI:
        fake = FakeOpenAI(flavour, **kw)
        fake.start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


@pytest.fixture
def fake_ollama(fake_ollama_factory: Callable[..., FakeOllama]) -> FakeOllama:
    return fake_ollama_factory()


@pytest.fixture
def fake_openai(fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    """The ``generic`` flavour."""
    return fake_openai_factory("generic")


@pytest.fixture
def fake_llama_server(fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_openai_factory("llama-server")


@pytest.fixture
def fake_lmstudio(fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_openai_factory("lmstudio")


@pytest.fixture
def fake_vllm(fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_openai_factory("vllm")


@pytest.fixture
def fake_lemonade(fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_openai_factory("lemonade")


@pytest.fixture(params=FLAVOURS)
def any_fake_openai(request: pytest.FixtureRequest, fake_openai_factory: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    """Parametrised over every flavour (lmstudio and lemonade JIT-load their first model on use)."""
    return fake_openai_factory(request.param)
