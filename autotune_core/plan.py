"""The Plan: every knob autotune decides for one request, plus the trace of who decided what and why.

Nobody should have to guess why a request got the context it got: every change goes through
:meth:`Plan.record`, which is what ``autotune plan`` prints and ``X-Autotune-Plan`` carries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from .messages import Message
from .precedence import Pin, lowers


@dataclass(slots=True)
class TraceEntry:
    """One decision. A plain dataclass, not a model: a request records a dozen of them, and pydantic still
    dumps them with the plan (``autotune plan --json``)."""

    plugin: str
    knob: str
    old: Any = None
    new: Any = None
    reason: str = ""
    #: a value a plugin proposed for a pinned knob and that was not applied (``old == new`` then)
    proposed: Any = None
    kept: bool = False

    def compact(self) -> str:
        return f"{self.plugin}:{self.knob}={self.new}"


class Truncation(TypedDict):
    """The backend processed fewer prompt tokens than the prompt has (prefix-protect's check)."""

    expected: int
    reported: int
    exact: bool
    num_ctx: int | None
    backend: str


class OutputCap(TypedDict):
    """An explicit max_tokens larger than the room the context leaves (capped by the core, with a warning)."""

    requested: int
    room: int


class Compression(TypedDict):
    """What the context-compressor did to the history."""

    tier: str
    saved_tokens: int
    budget: int
    history_tokens: int
    fits: bool


class ArchetypeFlag(TypedDict):
    """The hardware archetype's values that have no Plan field (ubatch, threads, GPU layers, build), by key."""

    id: str
    params: dict[str, Any]
    origins: dict[str, str]


class PlanFlags(TypedDict, total=False):
    """Facts plugins raise for the server, ``autotune chat`` and metrics. Typed for the ones the core knows;
    a third-party plugin puts its own under ``plugin`` (keyed by its name) rather than inventing keys."""

    truncated: Truncation
    output_capped: OutputCap
    swap_risk: bool
    #: "loaded->new": a request that changed a loaded model's context (a reload)
    ctx_resize: str
    compression: Compression
    archetype: ArchetypeFlag
    plugin: dict[str, Any]


@dataclass(slots=True)
class Plan:
    """The decided knobs for one request. ``None`` means "leave it to the backend".

    A slots dataclass, not a pydantic model: every plugin reads and writes it on every request (~160
    attribute reads, ~11 writes), and a pydantic model's attribute access takes the slow path of a class
    with ``__getattr__`` (~33 ns against ~7 ns a read). Nothing is validated on the way in (the core and
    plugins build it); ``model_dump``, ``model_dump_json`` and ``model_copy`` behave as pydantic's do."""

    model: str
    backend: str = ""
    profile: str = "balanced"
    num_ctx: int | None = None
    kv_type: str | None = None
    flash_attn: bool | None = None
    num_batch: int | None = None
    num_keep: int | None = None
    num_thread: int | None = None
    #: seconds; negative means "keep loaded forever", 0 means "unload after this request"
    keep_alive: float | None = None
    parallel: int | None = None
    max_tokens: int | None = None
    #: sampling to use only where the client sent none; empty unless an opt-in plugin (sampling-presets) fills it
    sampling: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    #: prompt tokens as counted (tokenizer) or estimated before sending
    prompt_tokens: int | None = None
    prompt_tokens_exact: bool = False
    #: knob -> how the backend applies it ("per_request", "at_load", "server_env", "unsupported")
    applied: dict[str, str] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    trace: list[TraceEntry] = field(default_factory=list)
    #: facts plugins raise for the server to expose (see :class:`PlanFlags`)
    flags: PlanFlags = field(default_factory=lambda: PlanFlags())
    #: allow a load that pre-flight says will not fit
    force: bool = False
    #: knobs fixed before planning (the client's explicit values, the model's config): see precedence.py
    pins: dict[str, Pin] = field(default_factory=dict)
    #: what a safety guard did to a pinned value, for the response (``X-Autotune-Warning``)
    warnings: list[str] = field(default_factory=list)

    # -- pydantic's serialisation API, for ``autotune plan --json``, tests and plugins that dumped the model --

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """As ``BaseModel.model_dump`` (``exclude=``, ``mode="json"``, ...)."""
        dumped: dict[str, Any] = _adapter().dump_python(self, **kwargs)
        return dumped

    def model_dump_json(self, **kwargs: Any) -> str:
        return _adapter().dump_json(self, **kwargs).decode()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Plan:
        """A copy (shallow, as pydantic's: lists and dicts are shared unless ``deep``), with ``update`` applied."""
        copied = copy.deepcopy(self) if deep else copy.copy(self)
        for name, value in (update or {}).items():
            setattr(copied, name, value)
        return copied

    def record(self, plugin: str, knob: str, old: Any, new: Any, reason: str) -> None:
        """Append one decision to the trace."""
        self.trace.append(TraceEntry(plugin, knob, old, new, reason))

    def set(self, plugin: str, knob: str, value: Any, reason: str, *, safety: bool = False) -> bool:
        """Change a knob and record it; a no-op change is not recorded. Returns whether it changed.

        A pinned knob keeps its value and the proposal is only traced, unless this is a ``safety`` change
        that lowers it (then the plan also carries a warning).
        """
        old = getattr(self, knob)
        if old == value:
            return False
        if not self.admits(plugin, knob, old, value, reason, safety=safety):
            return False
        setattr(self, knob, value)
        self.record(plugin, knob, old, value, reason)
        return True

    def admits(self, plugin: str, knob: str, current: Any, value: Any, reason: str, *, safety: bool) -> bool:
        """The precedence rule for one proposal against the knob's current value (also used by folds).

        Not pinned: yes. Pinned: only a safety choice that lowers it, which adds a warning; anything else is
        traced as "proposed …; client asked …: kept" and refused.
        """
        pin = self.pins.get(knob)
        if pin is None:
            return True
        if safety and lowers(knob, current, value):
            self.warn(f"{knob} lowered from {current} ({pin.describe()}) to {value} by {plugin}: {reason}")
            return True
        self.trace.append(
            TraceEntry(
                plugin=plugin,
                knob=knob,
                old=current,
                new=current,
                proposed=value,
                kept=True,
                reason=f"{value} proposed ({reason}); {pin.describe()}: kept",
            )
        )
        return False

    def warn(self, text: str) -> None:
        """A note for the response: a client value was changed, or the request will not run as asked."""
        if text not in self.warnings:
            self.warnings.append(text)

    def client_values(self) -> list[dict[str, Any]]:
        """Each pinned knob: asked for, sent, and whether it was kept (``autotune plan`` shows this)."""
        return [
            {
                "knob": pin.knob,
                "source": pin.source,
                "origin": pin.origin,
                "asked": pin.sent if pin.sent is not None else pin.value,
                "sent": getattr(self, pin.knob),
                "kept": getattr(self, pin.knob) == pin.value,
            }
            for pin in self.pins.values()
        ]

    def warning_header(self, limit: int = 1024) -> str:
        """The warnings, header-safe (ASCII, one line)."""
        text = " | ".join(self.warnings)
        if not text.isascii() or not text.isprintable():
            text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
        return text[:limit]

    def advise(self, text: str, *, knob: str = "") -> None:
        """Add advice the user can act on (shown in the trace, ``autotune plan`` and ``doctor``)."""
        if text not in self.advice:
            self.advice.append(text)

    def steps(self, knob: str) -> list[TraceEntry]:
        return [entry for entry in self.trace if entry.knob == knob]

    def compact_trace(self, limit: int = 1024) -> str:
        """A header-safe summary: the final value of each knob and the chain that led to it."""
        chains: dict[str, list[str]] = {}
        for entry in self.trace:  # one pass: this runs for every response
            if entry.knob in _COMPACT_SET:
                step = f"{entry.plugin}~{entry.proposed}" if entry.kept else f"{entry.plugin}>{entry.new}"
                chains.setdefault(entry.knob, []).append(step)
        text = ";".join(f"{knob}=" + ",".join(chains[knob]) for knob in _COMPACT_KNOBS if knob in chains)
        if not text.isascii() or not text.isprintable():
            text = "".join(ch for ch in text if 32 <= ord(ch) < 127)
        return text[:limit]


#: the knobs X-Autotune-Plan summarises, in this order
_COMPACT_KNOBS = (
    "num_ctx",
    "kv_type",
    "num_keep",
    "num_batch",
    "num_thread",
    "keep_alive",
    "max_tokens",
    "flash_attn",
    "messages",
)
_COMPACT_SET = frozenset(_COMPACT_KNOBS)


@cache
def _adapter() -> TypeAdapter[Plan]:
    """Built on the first dump (a schema build takes milliseconds; most processes never dump a plan)."""
    return TypeAdapter(Plan)
