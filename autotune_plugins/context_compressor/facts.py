"""Deterministic fact extraction from older turns (docs/backend-facts.md#context-compressor): errors,
accomplishments, decisions,
facts and topics, formatted as the standard block or the compact emergency block.

No model is asked: the same history always yields the same block, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autotune_core import Message

from .classifier import is_chatter
from .compress import segments

if TYPE_CHECKING:
    from .memo import Analyzer

_ERRORS = re.compile(
    r"\b(\w*Error|\w*Exception|Traceback|failed|failing|failure|OOM|out of memory|"
    r"40[0-4]|50[0-3]|SIGKILL|SIGSEGV|segfault|panic|crash(ed)?)\b",
    re.IGNORECASE,
)
_DONE = re.compile(
    r"\b(done|fixed|added|implemented|deployed|passed|merged|shipped|resolved|completed|"
    r"created|refactored|migrated|released)\b",
    re.IGNORECASE,
)
_DECISION = re.compile(
    r"\b(decided|chose|chosen|we will|we'll|going with|let's use|we should|settled on|"
    r"prefer|switch(ed)? to|use [A-Za-z])\b",
    re.IGNORECASE,
)
_COPULA = re.compile(r"\b(is|are|was|were|uses|runs|has|have|needs|requires|returns|contains|set to|=)\b")
_IDENT = re.compile(r"\b[A-Z][a-z]+[A-Z]\w{1,}|\b[A-Za-z_]\w*=\S+|`[^`]+`|\b\w+\.\w{2,4}\b|\b[A-Z]{2,}\w*\b")

TOPICS: dict[str, tuple[str, ...]] = {
    "python": ("python", "pip", "pytest", "django", "flask", "fastapi", "asyncio"),
    "javascript": ("javascript", "typescript", "node", "npm", "react", "vue"),
    "rust": ("rust", "cargo"),
    "go": ("golang", " go "),
    "sql": ("sql", "postgres", "postgresql", "mysql", "sqlite"),
    "docker": ("docker", "container", "kubernetes", "k8s"),
    "cloud": ("aws", "gcp", "azure", "s3"),
    "web": ("http", "rest", "graphql", "websocket", "endpoint"),
    "ml": ("model", "embedding", "inference", "llm", "gpu", "cuda"),
    "performance": ("latency", "throughput", "slow", "performance", "memory"),
    "security": ("auth", "token", "password", "tls", "security"),
    "testing": ("test", "assert", "coverage", "ci"),
}

BUCKET_LIMIT = 8


@dataclass
class Facts:
    turns: int = 0
    errors: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.errors or self.done or self.decisions or self.facts)


def _prose_lines(content: str) -> list[str]:
    lines: list[str] = []
    for part in segments(content):
        if part.kind == "trace":
            last = [line for line in part.text.split("\n") if line.strip()]
            if last:
                lines.append(last[-1].strip())  # the exception line says what went wrong
        elif part.kind == "prose":
            lines.extend(line.strip(" -*•\t") for line in part.text.split("\n"))
    return lines


#: (bucket, dedup key, line): a line worth keeping and where it goes (0 errors, 1 done, 2 decisions, 3 facts)
Candidate = tuple[int, str, str]


def fact_candidates(role: str, content: str) -> tuple[Candidate, ...]:
    """One message's lines of 12–220 chars with ≥ 4 words that match a bucket, in order."""
    if role not in ("user", "assistant", "tool"):
        return ()
    out: list[Candidate] = []
    for line in _prose_lines(content):
        if not 12 <= len(line) <= 220 or len(line.split()) < 4 or is_chatter(line):
            continue
        if _ERRORS.search(line):
            bucket = 0
        elif _DONE.search(line):
            bucket = 1
        elif _DECISION.search(line):
            bucket = 2
        elif _COPULA.search(line) and _IDENT.search(line):
            bucket = 3
        else:
            continue
        out.append((bucket, line[:60].lower(), line))
    return tuple(out)


def topics_of(content: str, *, left: bool, right: bool) -> frozenset[str]:
    """The topics one message names, as a search of all messages joined by spaces would find them:
    ``left``/``right`` say whether a joining space precedes/follows it (a topic word such as " go "
    may use it)."""
    text = (" " if left else "") + content.lower() + (" " if right else "")
    return frozenset(name for name, words in TOPICS.items() if any(w in text for w in words))


class Fold:
    """Facts and topics gathered over the first messages of a list; resumable (a copy goes on from there).

    Topics are gathered as if another message followed (see :func:`topics_of`); the list's last message is
    added with ``last=True``.
    """

    __slots__ = ("buckets", "open", "seen", "topics", "turns")

    def __init__(self) -> None:
        self.turns = 0
        self.buckets: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
        self.seen: set[str] = set()
        self.open = len(self.buckets)
        self.topics: set[str] = set()

    def copy(self) -> Fold:
        other = Fold()
        other.turns, other.open = self.turns, self.open
        other.buckets = (self.buckets[0][:], self.buckets[1][:], self.buckets[2][:], self.buckets[3][:])
        other.seen, other.topics = set(self.seen), set(self.topics)
        return other

    def add(self, role: str, candidates: tuple[Candidate, ...], topics: frozenset[str]) -> None:
        """One message: its candidate lines into the first bucket they match (8 each, deduplicated by prefix)."""
        self.turns += role == "user"
        self.topics |= topics
        if not self.open:
            return  # every bucket is full: no later line can be added
        for index, key, line in candidates:
            if key in self.seen:
                continue
            bucket = self.buckets[index]
            if len(bucket) < BUCKET_LIMIT:
                self.seen.add(key)
                bucket.append(line)
                self.open -= len(bucket) == BUCKET_LIMIT

    def facts(self) -> Facts:
        errors, done, decisions, facts = (list(b) for b in self.buckets)
        return Facts(
            turns=self.turns,
            errors=errors,
            done=done,
            decisions=decisions,
            facts=facts,
            topics=[name for name in TOPICS if name in self.topics][:8],
        )


def extract_facts(messages: list[Message], analyzer: Analyzer | None = None, ids: list[int] | None = None) -> Facts:
    """Candidate lines of every message into the first bucket they match, at most 8 each, deduplicated
    by prefix; topics of all of them.

    ``analyzer`` supplies the per-message steps and where to start: a :class:`~.memo.Memo` remembers them
    across requests, and hands back the fold of the longest list it has already seen that this one
    starts with (``ids``: its :meth:`~.memo.Memo.ids` of a list these messages start, if known). The fold
    itself is the same either way.
    """
    if analyzer is None:
        from .memo import DIRECT

        analyzer = DIRECT
    if not messages:
        return Facts()
    last = len(messages) - 1
    fold, start, token = analyzer.resume(messages, last, ids)
    for i in range(start, last):
        message = messages[i]
        fold.add(
            message.role,
            analyzer.candidates(message.role, message.content),
            analyzer.topics(message.role, message.content, i > 0, True),
        )
    analyzer.checkpoint(token, fold)
    final = messages[last]
    fold = fold.copy()
    fold.add(
        final.role,
        analyzer.candidates(final.role, final.content),
        analyzer.topics(final.role, final.content, last > 0, False),
    )
    return fold.facts()


def standard_block(facts: Facts, summarised: int) -> str:
    if facts.empty:
        return f"[{summarised} earlier conversation messages have been summarised. No specific facts were extracted.]"
    lines = [f"[Summary of {summarised} earlier conversation messages ({facts.turns} user turns)]"]
    for title, items in (
        ("Accomplished", facts.done),
        ("Decisions", facts.decisions),
        ("Key facts", facts.facts),
        ("Errors seen", facts.errors),
    ):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"- {item}" for item in items)
    if facts.topics:
        lines.append("Topics: " + ", ".join(facts.topics))
    lines.append("[End of summary]")
    return "\n".join(lines)


def compact_block(facts: Facts, summarised: int) -> str:
    lines = [f"[CONTEXT: {summarised} earlier messages summarized]"]
    for title, items, limit in (
        ("Done", facts.done, 3),
        ("Using", facts.decisions, 3),
        ("Facts", facts.facts, 3),
        ("Errors seen", facts.errors, 2),
    ):
        if items:
            lines.append(f"{title}: " + "; ".join(items[:limit]))
    if facts.topics:
        lines.append("Topics: " + ", ".join(facts.topics))
    lines.append("[/CONTEXT]")
    return "\n".join(lines)
