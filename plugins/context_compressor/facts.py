"""Deterministic fact extraction from older turns (spec §2.13): errors, accomplishments, decisions,
facts and topics, formatted as the standard block or the compact emergency block.

No model is asked: the same history always yields the same block, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from autotune_core import Message

from .classifier import is_chatter
from .compress import segments

_ERRORS = re.compile(r"\b(\w*Error|\w*Exception|Traceback|failed|failing|failure|OOM|out of memory|"
                     r"40[0-4]|50[0-3]|SIGKILL|SIGSEGV|segfault|panic|crash(ed)?)\b", re.IGNORECASE)
_DONE = re.compile(r"\b(done|fixed|added|implemented|deployed|passed|merged|shipped|resolved|completed|"
                   r"created|refactored|migrated|released)\b", re.IGNORECASE)
_DECISION = re.compile(r"\b(decided|chose|chosen|we will|we'll|going with|let's use|we should|settled on|"
                       r"prefer|switch(ed)? to|use [A-Za-z])\b", re.IGNORECASE)
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


def extract_facts(messages: list[Message]) -> Facts:
    """Scan lines of 12–220 chars with ≥ 4 words into the first bucket they match; dedup by prefix."""
    facts = Facts(turns=sum(1 for m in messages if m.role == "user"))
    seen: set[str] = set()
    text_all = " ".join(m.content.lower() for m in messages)
    for message in messages:
        if message.role not in ("user", "assistant", "tool"):
            continue
        for line in _prose_lines(message.content):
            if not 12 <= len(line) <= 220 or len(line.split()) < 4 or is_chatter(line):
                continue
            key = line[:60].lower()
            if key in seen:
                continue
            if _ERRORS.search(line):
                bucket = facts.errors
            elif _DONE.search(line):
                bucket = facts.done
            elif _DECISION.search(line):
                bucket = facts.decisions
            elif _COPULA.search(line) and _IDENT.search(line):
                bucket = facts.facts
            else:
                continue
            if len(bucket) < BUCKET_LIMIT:
                seen.add(key)
                bucket.append(line)
    facts.topics = [name for name, words in TOPICS.items() if any(w in text_all for w in words)][:8]
    return facts


def standard_block(facts: Facts, summarised: int) -> str:
    if facts.empty:
        return (f"[{summarised} earlier conversation messages have been summarised. "
                "No specific facts were extracted.]")
    lines = [f"[Summary of {summarised} earlier conversation messages ({facts.turns} user turns)]"]
    for title, items in (("Accomplished", facts.done), ("Decisions", facts.decisions),
                         ("Key facts", facts.facts), ("Errors seen", facts.errors)):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"- {item}" for item in items)
    if facts.topics:
        lines.append("Topics: " + ", ".join(facts.topics))
    lines.append("[End of summary]")
    return "\n".join(lines)


def compact_block(facts: Facts, summarised: int) -> str:
    lines = [f"[CONTEXT: {summarised} earlier messages summarized]"]
    for title, items, limit in (("Done", facts.done, 3), ("Using", facts.decisions, 3),
                                ("Facts", facts.facts, 3), ("Errors seen", facts.errors, 2)):
        if items:
            lines.append(f"{title}: " + "; ".join(items[:limit]))
    if facts.topics:
        lines.append("Topics: " + ", ".join(facts.topics))
    lines.append("[/CONTEXT]")
    return "\n".join(lines)
