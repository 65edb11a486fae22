"""The fakes' toy "model": tokenizer, embeddings, chat template and the planned answer.

Deterministic and dependency-free, so tests can predict token counts, cache hits and vectors exactly.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "VOCAB_SIZE",
    "Output",
    "common_prefix_len",
    "count_tokens",
    "embed_text",
    "pieces",
    "render_messages",
    "token_id",
]

# Every piece is optional leading whitespace plus at most 4 non-space characters (about chars/4 for prose);
# the second alternative catches trailing whitespace, so "".join(pieces(t)) == t always holds.
_PIECE_RE = re.compile(r"\s*\S{1,4}|\s+")
VOCAB_SIZE = 32000


def pieces(text: str) -> list[str]:
    """Split ``text`` into token-like pieces; joining them gives back ``text`` exactly."""
    return _PIECE_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(pieces(text))


def token_id(piece: str) -> int:
    """Deterministic id of a piece (1..VOCAB_SIZE-1)."""
    return zlib.crc32(piece.encode("utf-8")) % (VOCAB_SIZE - 1) + 1


def common_prefix_len(a: list[str], b: list[str]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


_WORD_RE = re.compile(r"\w+")


def embed_text(text: str, dims: int = 64) -> list[float]:
    """Hashed bag of words, L2-normalised: similar texts get a high cosine, identical texts cosine 1."""
    vec = [0.0] * dims
    for word in _WORD_RE.findall(text.lower()):
        h = zlib.crc32(word.encode("utf-8"))
        vec[h % dims] += 1.0 if (h >> 16) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        return vec
    return [v / norm for v in vec]


def render_messages(messages: Any, tools: Any = None) -> str:
    """A fixed toy chat template. Tools go first (like most templates put them in the system area), so a
    changed tool list breaks the prefix cache -- as it does on real servers."""
    parts: list[str] = []
    if tools:
        parts.append("<|tools|>" + json.dumps(tools, sort_keys=True, separators=(",", ":")) + "<|end|>\n")
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        text = "" if content is None else str(content)
        if m.get("tool_calls"):
            text += json.dumps(m["tool_calls"], sort_keys=True, separators=(",", ":"))
        parts.append(f"<|{m.get('role', 'user')}|>\n{text}<|end|>\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


@dataclass
class Output:
    """What the model "generates" for one request."""

    text: str
    pieces: list[str]
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str  # OpenAI style: stop | length | tool_calls
