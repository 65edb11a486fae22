"""What every hook receives: the per-request context, fold choices, a typed stash and fold stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import BaseModel

from .backend import Capabilities
from .hardware import HardwareSnapshot, Pressure
from .hookkinds import STAGES
from .modelinfo import ModelInfo
from .profiles import Profile
from .tokens import estimate_tokens

if TYPE_CHECKING:
    from .host import PluginHost

T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Choice(Generic[T]):
    """A fold step's answer: the new value and why.

    ``safety`` marks a choice made because the current value would not fit in memory (a guard, or
    critical pressure): only such a choice may lower a value the client set explicitly.
    """

    value: T
    reason: str = ""
    safety: bool = False


class StashKey(Generic[T]):
    """A typed key for :class:`Stash`, so plugins never collide on strings."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name


class Stash:
    """Per-request typed storage for plugins (one plugin's pre_request → its post_response)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return self._data[key]  # type: ignore[no-any-return]  # typed by the key (no cast() call: hot path)

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass
class HookContext:
    """Everything a hook may read. Gathered before the hooks run, so hooks never do I/O."""

    host: PluginHost
    hardware: HardwareSnapshot
    capabilities: Capabilities
    backend_name: str
    profile: Profile
    model: ModelInfo | None = None
    pressure: Pressure = field(default_factory=Pressure)
    #: models loaded on this backend right now, name -> loaded num_ctx (None if unknown)
    loaded: dict[str, int | None] = field(default_factory=dict)
    stash: Stash = field(default_factory=Stash)
    #: count tokens of a text with the model's tokenizer when it is in-process, else estimate
    count_tokens: Callable[[str], int] | None = None

    @overload
    def settings(self, of: type[S]) -> S: ...

    @overload
    def settings(self, of: str) -> BaseModel: ...

    def settings(self, of: type[S] | str) -> S | BaseModel:
        """A plugin's validated settings: ``ctx.settings(MySettings)`` returns that model, typed; a plugin name
        returns its settings as a plain ``BaseModel``."""
        if isinstance(of, str):
            return self.host.plugin_settings(of)
        return self.host.settings_of(of)

    def tokens(self, text: str) -> int:
        if self.count_tokens is not None:
            return self.count_tokens(text)
        return estimate_tokens(text)


def fold_stage(stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare where a ``choose_*`` implementation sits in the fold (propose, snap, adjust, guard)."""
    if stage not in STAGES:
        raise ValueError(f"unknown fold stage {stage!r}; expected one of {', '.join(STAGES)}")

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.autotune_stage = stage  # type: ignore[attr-defined]
        return func

    return mark
