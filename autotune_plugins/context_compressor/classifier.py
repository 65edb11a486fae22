"""How much a message is worth keeping: the original autotune's additive score, 0.0–1.0
(docs/backend-facts.md#context-compressor).

Deterministic and regex-only, so the same history always compresses the same way (prefix caching).
"""

from __future__ import annotations

import re

CHATTER = frozenset(
    {
        "ok",
        "okay",
        "k",
        "thanks",
        "thank you",
        "thx",
        "ty",
        "got it",
        "lgtm",
        "hi",
        "hello",
        "hey",
        "bye",
        "agreed",
        "sure",
        "yes",
        "no",
        "yep",
        "nope",
        "cool",
        "great",
        "nice",
        "perfect",
        "sounds good",
        "makes sense",
        "will do",
        "done",
        "right",
        "understood",
        "np",
        "no problem",
        "awesome",
    }
)

_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
#: what marks a stack trace or crash, each with a plain substring it cannot match without (a cheap
#: ``in`` test spares the regex on ordinary prose)
_EXCEPTION_NAME = re.compile(r"\b\w+(Error|Exception)\b")
_TRACE_PARTS: tuple[tuple[str, re.Pattern[str] | None], ...] = (
    ("Traceback (most recent call last)", None),
    ("at ", re.compile(r"^\s+at [\w.$<>]+\(", re.MULTILINE)),
    ("Error", _EXCEPTION_NAME),
    ("Exception", _EXCEPTION_NAME),
    ("panicked at", re.compile(r"\bpanicked at\b")),
    ("Segmentation fault", re.compile(r"\bSegmentation fault\b")),
    ('File "', re.compile(r"^\s*File \"[^\"]+\", line \d+", re.MULTILINE)),
)
_TECH_WORDS: tuple[str, ...] = (
    "error",
    "function",
    "class",
    "method",
    "select",
    "insert",
    "update",
    "delete",
    "join",
    "token",
    "tokens",
    "model",
    "ram",
    "gpu",
    "cpu",
    "api",
    "json",
    "yaml",
    "docker",
    "kubernetes",
    "config",
    "database",
    "query",
    "index",
    "cache",
    "thread",
    "async",
    "import",
    "module",
    "deploy",
    "server",
    "request",
    "response",
    "endpoint",
    "schema",
    "variable",
    "compile",
    "build",
    "test",
    "bug",
    "memory",
)
_TECH = re.compile(r"\b(" + "|".join(_TECH_WORDS) + r")\b", re.IGNORECASE)
_TECH_SET = frozenset(_TECH_WORDS)
_WORD_RUN = re.compile(r"\w+")
_UNIT = re.compile(r"\b\d+(\.\d+)?\s?(gb|gib|mb|mib|kb|ms|s|%|tokens|tok/s|ghz|mhz|k)\b", re.IGNORECASE)
_LIST = re.compile(r"^\s*([-*•]|\d+[.)])\s+", re.MULTILINE)
_URL = re.compile(r"https?://\S+")

HIGH = 0.65
MEDIUM = 0.30


def has_trace(content: str) -> bool:
    """A stack trace or crash report anywhere in the text."""
    return any(
        needle in content and (pattern is None or pattern.search(content) is not None)
        for needle, pattern in _TRACE_PARTS
    )


def tech_words(content: str) -> int:
    """How many technical words the text has (whole words, any case)."""
    if content.isascii():  # whole \w runs compared in lower case: what the regex matches, ~10x faster
        return sum(1 for word in _WORD_RUN.findall(content) if word.lower() in _TECH_SET)
    return len(_TECH.findall(content))


def is_chatter(text: str) -> bool:
    """A short acknowledgement such as "ok thanks!" carries nothing worth keeping."""
    stripped = text.strip().lower().strip(".!?,;: ")
    return len(stripped) < 60 and (
        stripped in CHATTER
        or all(part.strip(".!?,;: ") in CHATTER for part in re.split(r"[,.!;]+\s*|\s+and\s+", stripped) if part)
    )


def score_message(role: str, content: str) -> float:
    """The original's importance score: code, errors, technical words, numbers and lists raise it."""
    if not content.strip():
        return 0.0
    if role == "tool":
        return 0.5
    if is_chatter(content):
        return 0.05
    score = 0.30
    score += _fence_points(len(_FENCE.findall(content)))
    score += min(0.10, 0.02 * len(_INLINE_CODE.findall(content)))
    if has_trace(content):
        score += 0.30
    score += min(0.25, 0.025 * tech_words(content))
    score += min(0.15, 0.04 * len(_UNIT.findall(content)))
    score += min(0.10, 0.03 * len(_LIST.findall(content)))
    if _URL.search(content):
        score += 0.05
    if role == "user" and "?" in content:
        score += 0.08
    score += _length_points(len(content))
    return max(0.0, min(1.0, score))


def _fence_points(fences: int) -> float:
    """Fenced code: one fence (an unclosed block) counts less than a complete block."""
    if fences >= 2:
        return 0.35
    return 0.15 if fences == 1 else 0.0


def _length_points(length: int) -> float:
    """Longer messages tend to carry substance; a very short one (under 20 characters) loses points."""
    if length > 1000:
        return 0.15
    if length > 400:
        return 0.08
    if length > 100:
        return 0.03
    return -0.15 if length < 20 else 0.0
