"""Sample plugins for tests/core (importable as ``core_helpers:Name`` for ``[plugins] load``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import Choice, fold_stage, hookimpl


class Recorder:
    """Appends ``(name, hook)`` to a shared list whenever one of its hooks runs."""

    def __init__(self, name: str, calls: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.calls = calls if calls is not None else []

    @hookimpl
    def pre_request(self, plan: Any) -> None:
        self.calls.append((self.name, "pre_request"))


class Fixed:
    """A num_ctx fold step returning a fixed value at a given stage (and optional tryfirst/trylast)."""

    def __new__(cls, name: str, value: int | None, stage: str = "adjust", order: str = "") -> Any:
        opts = {"tryfirst": order == "tryfirst", "trylast": order == "trylast"}

        @hookimpl(**opts)
        @fold_stage(stage)
        def choose_num_ctx(proposal: Choice[int] | None) -> Choice[int] | None:
            return None if value is None else Choice(value, f"{name} says {value}")

        return type(name, (), {"name": name, "choose_num_ctx": staticmethod(choose_num_ctx)})()


class Boom:
    """A fold step that raises, at a given stage."""

    def __new__(cls, name: str, stage: str, hook: str = "choose_num_ctx") -> Any:
        @hookimpl(specname=hook)
        @fold_stage(stage)
        def step(proposal: Choice[Any] | None) -> Choice[Any] | None:
            raise RuntimeError(f"{name} exploded")

        return type(name, (), {"name": name, "step": staticmethod(step)})()


class WithSettings:
    """A plugin with a validated settings model (``[plugins.with-settings]``)."""

    name = "with-settings"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        limit: int = Field(default=100, ge=1, description="the limit")
        label: str = "x"

    @hookimpl
    def pre_request(self, ctx: Any, plan: Any) -> None:
        plan.flags["limit"] = ctx.settings(self.name).limit


class ConfigLoaded:
    """Loaded through ``[plugins] load = ["core_helpers:ConfigLoaded"]``."""

    name = "config-loaded"

    @hookimpl
    def pre_request(self, plan: Any) -> None:
        plan.flags["config-loaded"] = True


class Misspelled:
    """Implements a hook that does not exist."""

    name = "misspelled"

    @hookimpl
    def choose_num_cxt(self, proposal: Any) -> None:
        return None
