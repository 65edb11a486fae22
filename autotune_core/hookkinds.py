"""How each hook is called, declared on the spec itself (in the spirit of pluggy's ``firstresult``).

``hookspecs.py`` marks every spec with :func:`collect` or :func:`fold`; the host and the typed facade
(:mod:`autotune_core.hooks`) read these marks, so the contract lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: fold stages, in the order they run; guards run last so nothing undoes them
STAGES: tuple[str, ...] = ("propose", "snap", "adjust", "guard")


@dataclass(frozen=True, slots=True)
class HookKind:
    """The calling rule of one hook."""

    #: "collect": every implementation runs, results collected; "fold": each refines the previous proposal
    kind: Literal["collect", "fold"]
    #: describes one request: runs only for the plugins in the server's stack (and per-model overrides)
    request: bool = False
    #: an implementation may return an awaitable, awaited before the next plugin runs
    may_await: bool = False
    #: fold only: the Plan field the fold decides
    knob: str = ""
    #: fold only: the more conservative of two values (what a failing guard falls back to)
    safest: Callable[[Any, Any], Any] | None = None
    stages: tuple[str, ...] = ()


ATTRIBUTE = "autotune_kind"


def collect(*, request: bool = False, may_await: bool = False) -> Callable[[F], F]:
    """Collect-all: every implementation runs in plugin order; failures are isolated and counted."""
    return _mark(HookKind("collect", request=request, may_await=may_await))


def fold(*, knob: str, safest: Callable[[Any, Any], Any]) -> Callable[[F], F]:
    """Fold over :data:`STAGES`: each implementation receives ``proposal`` and returns a Choice or None.

    Folds describe a request and never await: ``choose_*`` hooks are pure decisions on gathered facts.
    """
    return _mark(HookKind("fold", request=True, knob=knob, safest=safest, stages=STAGES))


def _mark(kind: HookKind) -> Callable[[F], F]:
    def mark(spec: F) -> F:
        setattr(spec, ATTRIBUTE, kind)
        return spec

    return mark


def kinds(module: Any) -> dict[str, HookKind]:
    """Every marked spec of ``module`` by name (a spec without a mark is a contract bug)."""
    found: dict[str, HookKind] = {}
    for name in dir(module):
        value = getattr(module, name)
        kind = getattr(value, ATTRIBUTE, None)
        if isinstance(kind, HookKind):
            found[name] = kind
    return found
