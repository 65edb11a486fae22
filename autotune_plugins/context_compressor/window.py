"""Choosing a tier and assembling the compressed message list, then checking it really fits.

Layout of a request: ``prefix`` (the leading system messages, untouched so the backend's prefix cache
keeps hitting), ``history`` (what may be compressed) and ``tail`` (the latest user turn and anything
after it, such as the current tool-call round: always verbatim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autotune_core import Message

from .facts import compact_block, extract_facts, standard_block
from .memo import DIRECT, Analyzer, paired

TIER_NAMES: tuple[str, ...] = ("FULL", "RECENT_PLUS_FACTS", "COMPRESSED", "EMERGENCY")


@dataclass(frozen=True, slots=True)
class TierRule:
    name: str
    recent: int
    #: messages scoring below this are dropped (never tool-call pairs, never the tail)
    drop_below: float
    recent_mode: str  # verbatim | normal | aggressive
    older_mode: str  # normal | aggressive | skeleton
    compact: bool


DEFAULT_RULES: tuple[TierRule, ...] = (
    TierRule("RECENT_PLUS_FACTS", 8, 0.15, "verbatim", "normal", compact=False),
    TierRule("COMPRESSED", 6, 0.25, "normal", "aggressive", compact=False),
    TierRule("EMERGENCY", 4, 0.40, "aggressive", "skeleton", compact=True),
)


@dataclass
class Outcome:
    tier: str
    messages: list[Message]
    history_before: int
    history_after: int
    budget: int
    fits: bool
    #: (tier, recent window, history tokens) for each assembly tried, in order
    attempts: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def saved(self) -> int:
        return self.history_before - self.history_after if self.fits else 0


Counter = Callable[[Message], int]


def split(messages: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """(prefix, history, tail). No user message → nothing is compressible."""
    start = 0
    while start < len(messages) and messages[start].role in ("system", "developer"):
        start += 1
    last_user = max((i for i in range(start, len(messages)) if messages[i].role == "user"), default=-1)
    if last_user < 0:
        return messages[:start], [], messages[start:]
    return messages[:start], messages[start:last_user], messages[last_user:]


def _window_start(history: list[Message], recent: int) -> int:
    boundary = max(0, len(history) - recent)
    while 0 < boundary < len(history) and history[boundary].role == "tool":
        boundary -= 1  # pull the assistant's tool_calls into the window with its results
    return boundary


class _Forms:
    """Each history message's form per (mode, drop threshold) and its tokens, worked out once per call:
    the attempts of one request (tiers, shrinking windows) share them."""

    def __init__(self, history: list[Message], an: Analyzer, count: Counter) -> None:
        self.history, self.an, self.count = history, an, count
        self.tokens = [count(m) for m in history]
        self.ids = an.ids(history)
        self._tables: dict[tuple[str, float], list[tuple[Message | None, int] | None]] = {}

    def table(self, mode: str, drop_below: float) -> list[tuple[Message | None, int] | None]:
        """Per message index: (the message as sent in ``mode``, or None when dropped; its tokens), or None
        while not worked out (see :meth:`form`)."""
        table = self._tables.get((mode, drop_below))
        if table is None:
            table = self._tables[(mode, drop_below)] = [None] * len(self.history)
        return table

    def form(self, i: int, mode: str, drop_below: float) -> tuple[Message | None, int]:
        message = self.history[i]
        if mode == "verbatim":
            hit: tuple[Message | None, int] = (message, self.tokens[i])
        elif not paired(message) and self.an.score(message.role, message.content) < drop_below:
            hit = (None, 0)
        else:
            shrunk = self.an.shrink(message, mode)
            hit = (shrunk, 0 if shrunk is None else self.tokens[i] if shrunk is message else self.count(shrunk))
        self.table(mode, drop_below)[i] = hit
        return hit


def _assemble(
    prefix: list[Message], forms: _Forms, tail: list[Message], rule: TierRule, recent: int
) -> tuple[list[Message], int]:
    """The candidate message list and the tokens of its compressible part (facts block included)."""
    history = forms.history
    boundary = _window_start(history, recent)
    body: list[Message] = []
    tokens = 0
    for start, stop, mode in ((0, boundary, rule.older_mode), (boundary, len(history), rule.recent_mode)):
        table = forms.table(mode, rule.drop_below)
        for i in range(start, stop):
            hit = table[i] or forms.form(i, mode, rule.drop_below)
            if hit[0] is not None:
                body.append(hit[0])
                tokens += hit[1]
    block: list[Message] = []
    if boundary:
        older = history[:boundary]
        facts = extract_facts(older, forms.an, forms.ids)
        text = compact_block(facts, len(older)) if rule.compact else standard_block(facts, len(older))
        block.append(Message(role="system", content=text))
        tokens += forms.count(block[0])
    return [*prefix, *block, *body, *tail], tokens


def assemble(
    prefix: list[Message],
    history: list[Message],
    tail: list[Message],
    rule: TierRule,
    recent: int,
    an: Analyzer = DIRECT,
) -> list[Message]:
    """The message list of one tier with a recent window of ``recent`` messages."""
    return _assemble(prefix, _Forms(history, an, lambda m: 0), tail, rule, recent)[0]


def compress_history(
    messages: list[Message],
    *,
    budget: int,
    count: Counter,
    thresholds: tuple[float, float, float] = (0.55, 0.75, 0.90),
    rules: tuple[TierRule, ...] = DEFAULT_RULES,
    memo: Analyzer = DIRECT,
) -> Outcome:
    """Pick the tier by how full the history is, then escalate until the result fits ``budget``.

    If even the emergency tier (with its recent window shrunk to 2, then 0) does not fit, the
    messages come back unchanged with ``fits=False``: the core then refuses the request rather than
    anything being cut silently. ``memo`` (a :class:`~.memo.Memo`) remembers per-message work across calls;
    the result is the same with or without it.
    """
    prefix, history, tail = split(messages)
    forms = _Forms(history, memo, count)
    before = sum(forms.tokens)
    pct = before / budget if budget > 0 else float("inf")
    level = sum(1 for threshold in thresholds if pct >= threshold)
    if level == 0 or not history:
        return Outcome("FULL", messages, before, before, budget, fits=before <= budget)
    attempts: list[tuple[str, int, int]] = []
    for rule in rules[level - 1 :]:
        windows = (rule.recent, 2, 0) if rule is rules[-1] else (rule.recent,)
        for recent in windows:
            if recent > rule.recent:
                continue
            candidate, after = _assemble(prefix, forms, tail, rule, recent)
            attempts.append((rule.name, recent, after))
            if after <= budget:
                return Outcome(rule.name, candidate, before, after, budget, fits=True, attempts=attempts)
    return Outcome(rules[-1].name, messages, before, before, budget, fits=False, attempts=attempts)
