"""Choosing a tier and assembling the compressed message list, then checking it really fits.

Layout of a request: ``prefix`` (the leading system messages, untouched so the backend's prefix cache
keeps hitting), ``history`` (what may be compressed) and ``tail`` (the latest user turn and anything
after it, such as the current tool-call round: always verbatim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autotune_core import Message

from .classifier import score_message
from .compress import compress_message, has_protected, skeleton
from .facts import compact_block, extract_facts, standard_block

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


def _paired(message: Message) -> bool:
    """Part of a tool-call round: dropping one side alone would break the backend's template."""
    return message.role == "tool" or bool(message.tool_calls)


def _window_start(history: list[Message], recent: int) -> int:
    boundary = max(0, len(history) - recent)
    while 0 < boundary < len(history) and history[boundary].role == "tool":
        boundary -= 1  # pull the assistant's tool_calls into the window with its results
    return boundary


def _shrink(message: Message, mode: str) -> Message | None:
    if mode == "verbatim":
        return message
    if mode == "skeleton":
        if not _paired(message) and not has_protected(message.content):
            return None  # the facts block carries what it said
        content = skeleton(message.role, message.content)
    else:
        content = compress_message(message.role, message.content, aggressive=mode == "aggressive")
    return message if content == message.content else message.model_copy(update={"content": content})


def assemble(prefix: list[Message], history: list[Message], tail: list[Message], rule: TierRule,
             recent: int) -> list[Message]:
    boundary = _window_start(history, recent)
    older, newer = history[:boundary], history[boundary:]
    body: list[Message] = []
    for group, mode in ((older, rule.older_mode), (newer, rule.recent_mode)):
        for message in group:
            if (mode != "verbatim" and not _paired(message)
                    and score_message(message.role, message.content) < rule.drop_below):
                continue
            shrunk = _shrink(message, mode)
            if shrunk is not None:
                body.append(shrunk)
    block: list[Message] = []
    if older:
        facts = extract_facts(older)
        text = compact_block(facts, len(older)) if rule.compact else standard_block(facts, len(older))
        block.append(Message(role="system", content=text))
    return [*prefix, *block, *body, *tail]


def compress_history(messages: list[Message], *, budget: int, count: Counter,
                     thresholds: tuple[float, float, float] = (0.55, 0.75, 0.90),
                     rules: tuple[TierRule, ...] = DEFAULT_RULES) -> Outcome:
    """Pick the tier by how full the history is, then escalate until the result fits ``budget``.

    If even the emergency tier (with its recent window shrunk to 2, then 0) does not fit, the
    messages come back unchanged with ``fits=False``: the core then refuses the request rather than
    anything being cut silently.
    """
    prefix, history, tail = split(messages)
    before = sum(count(m) for m in history)
    pct = before / budget if budget > 0 else float("inf")
    level = sum(1 for threshold in thresholds if pct >= threshold)
    if level == 0 or not history:
        return Outcome("FULL", messages, before, before, budget, fits=before <= budget)
    attempts: list[tuple[str, int, int]] = []
    for rule in rules[level - 1:]:
        windows = (rule.recent, 2, 0) if rule is rules[-1] else (rule.recent,)
        for recent in windows:
            if recent > rule.recent:
                continue
            candidate = assemble(prefix, history, tail, rule, recent)
            after = sum(count(m) for m in candidate[len(prefix):len(candidate) - len(tail)])
            attempts.append((rule.name, recent, after))
            if after <= budget:
                return Outcome(rule.name, candidate, before, after, budget, fits=True, attempts=attempts)
    return Outcome(rules[-1].name, messages, before, before, budget, fits=False, attempts=attempts)
