"""Shrinking one message without losing what matters.

Rules (the original autotune's, docs/backend-facts.md#context-compressor, with its defects fixed): strip
noise, fold big JSON blobs, keep a
tool output's head and tail, trim long assistant (and, when aggressive, user) prose. Code blocks and
stack traces are *protected*: never cut, never folded, never dropped. Prose is only ever cut at a
paragraph or sentence boundary; if no boundary exists the sentence is kept whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["prose", "code", "trace"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FENCE_OPEN = re.compile(r"^\s*(```+|~~~+)")
_TRACE_START = re.compile(r"^\s*(Traceback \(most recent call last\):|Exception in thread |thread '.*' panicked at )")
_JAVA_AT = re.compile(r"^\s+at \S")
_PY_FRAME = re.compile(r"^\s+(File \"|\S)")
_EXC_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit|Warning)\b.*|^\S+: .*")
_BRACKET = re.compile(r"[{\[]")
_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)")


@dataclass(frozen=True, slots=True)
class Segment:
    kind: SegmentKind
    text: str

    @property
    def protected(self) -> bool:
        return self.kind != "prose"


def segments(text: str) -> list[Segment]:
    """Split text into prose, fenced code blocks and stack traces (the last two are protected)."""
    lines = text.split("\n")
    out: list[Segment] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            out.append(Segment("prose", "\n".join(prose)))
            prose.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE_OPEN.match(line)
        if fence:
            marker = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(marker[:3]):
                j += 1
            flush()
            out.append(Segment("code", "\n".join(lines[i : j + 1])))
            i = j + 1
            continue
        if _TRACE_START.match(line) or (
            _JAVA_AT.match(lines[i + 1])
            if i + 1 < len(lines) and line.strip() and not line.startswith((" ", "\t"))
            else False
        ):
            j = i + 1
            while j < len(lines) and (
                _JAVA_AT.match(lines[j])
                or (lines[j][:1] in (" ", "\t") and lines[j].strip())
                or lines[j].startswith("Caused by:")
            ):
                j += 1
            if j < len(lines) and _EXC_LINE.match(lines[j]):
                j += 1  # the exception line that ends a Python traceback
            flush()
            out.append(Segment("trace", "\n".join(lines[i:j])))
            i = j
            continue
        prose.append(line)
        i += 1
    flush()
    return out


def join(parts: list[Segment]) -> str:
    return "\n".join(part.text for part in parts)


def has_protected(text: str) -> bool:
    return any(seg.protected for seg in segments(text))


# -- noise -------------------------------------------------------------------------------------------


def strip_noise(text: str) -> str:
    """ANSI escapes, trailing blanks, runs of a repeated line and of blank lines (prose only)."""
    text = _ANSI.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    i = 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and lines[j + 1] == lines[i] and lines[i].strip():
            j += 1
        out.append(lines[i])
        if j - i >= 3:
            out.append(f"[previous line repeated {j - i} more times]")
        else:
            out.extend(lines[i + 1 : j + 1])
        i = j + 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")


# -- JSON folding --------------------------------------------------------------------------------------


def _match_bracket(text: str, start: int) -> int:
    """Index after the bracket closing the one at ``start`` (string-aware), or -1."""
    pairs = {"{": "}", "[": "]"}
    stack = [pairs[text[start]]]
    i = start + 1
    in_string = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "}]":
            if not stack or ch != stack.pop():
                return -1
            if not stack:
                return i + 1
        i += 1
    return -1


def _describe_json(value: object) -> str:
    if isinstance(value, dict):
        keys = list(value)
        shown = ", ".join(str(k) for k in keys[:6]) + ("…" if len(keys) > 6 else "")
        return f"{{/* {len(keys)} keys: {shown} */}}"
    assert isinstance(value, list)
    kinds = sorted({type(item).__name__ for item in value}) or ["empty"]
    return f"[/* {len(value)} × {'/'.join(kinds)} */]"


def fold_json(text: str, min_chars: int = 120) -> str:
    """Replace valid JSON objects/arrays of ``min_chars`` or more with a one-line description.

    Invalid JSON is left alone: it has no safe boundary to cut at.
    """
    out: list[str] = []
    i = 0
    while True:
        found = _BRACKET.search(text, i)  # jump to the next bracket: the text between is kept as it is
        if found is None:
            out.append(text[i:])
            break
        start = found.start()
        out.append(text[i:start])
        end = _match_bracket(text, start)
        if end > 0 and end - start - 2 >= min_chars:
            try:
                value = json.loads(text[start:end])
            except ValueError:
                value = None
            if isinstance(value, dict | list):
                out.append(_describe_json(value))
                i = end
                continue
        out.append(text[start])
        i = start + 1
    return "".join(out)


# -- cutting prose at boundaries --------------------------------------------------------------------


def sentences(paragraph: str) -> list[str]:
    """Split at ``.!?`` followed by whitespace; the pieces keep their punctuation."""
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.end()
        if end < len(paragraph) and not paragraph[end].isspace():
            continue
        parts.append(paragraph[start:end].strip())
        start = end
    rest = paragraph[start:].strip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


def cut_prose(text: str, limit: int) -> tuple[str, int]:
    """Keep whole paragraphs, then whole sentences, up to about ``limit`` chars; never mid-sentence.

    Returns (kept text, chars omitted). At least the first sentence is always kept.
    """
    if len(text) <= limit:
        return text, 0
    kept: list[str] = []
    used = 0
    for paragraph in re.split(r"\n\s*\n", text):
        if used + len(paragraph) <= limit:
            kept.append(paragraph)
            used += len(paragraph) + 2
            continue
        partial: list[str] = []
        for sentence in sentences(paragraph):
            if used + len(sentence) > limit and (kept or partial):
                break
            partial.append(sentence)
            used += len(sentence) + 1
        if partial:
            kept.append(" ".join(partial))
        break
    result = "\n\n".join(kept)
    return result, max(0, len(text) - len(result))


# -- message rules ----------------------------------------------------------------------------------


def _clean_prose(parts: list[Segment]) -> list[Segment]:
    return [
        Segment("prose", fold_json(strip_noise(p.text)))
        if p.kind == "prose"
        else Segment(p.kind, _ANSI.sub("", p.text))
        if p.kind == "trace"
        else p
        for p in parts
    ]


def head_tail_lines(text: str, head: int, tail: int) -> str:
    """Keep the first ``head`` and last ``tail`` lines plus every protected line; mark the gaps."""
    parts = segments(text)
    lines: list[tuple[str, bool]] = []
    for part in parts:
        lines.extend((line, part.protected) for line in part.text.split("\n"))
    if len(lines) <= head + tail + 4:
        return text
    keep = [i < head or i >= len(lines) - tail or protected for i, (_, protected) in enumerate(lines)]
    out: list[str] = []
    gap = 0
    for (line, _), kept in zip(lines, keep, strict=True):
        if kept:
            if gap:
                out.append(f"… [{gap} lines omitted] …")
                gap = 0
            out.append(line)
        else:
            gap += 1
    if gap:
        out.append(f"… [{gap} lines omitted] …")
    return "\n".join(out)


def _trim_long(parts: list[Segment], limit: int, *, keep_last: bool) -> str:
    """First prose paragraph(s) within ``limit``, every protected segment, the last paragraph."""
    prose_total = sum(len(p.text) for p in parts if p.kind == "prose")
    if prose_total <= limit:
        return join(parts).strip()
    out: list[str] = []
    omitted = 0
    prose_index = [i for i, p in enumerate(parts) if p.kind == "prose" and p.text.strip()]
    first = prose_index[0] if prose_index else -1
    last = prose_index[-1] if keep_last and len(prose_index) > 1 else -1
    for i, part in enumerate(parts):
        if part.protected:
            out.append(part.text)
        elif i == first:
            kept, lost = cut_prose(part.text.strip(), limit // 2 if last >= 0 else limit)
            out.append(kept)
            omitted += lost
        elif i == last:
            paragraphs = [p for p in re.split(r"\n\s*\n", part.text.strip()) if p.strip()]
            tail = paragraphs[-1] if paragraphs else ""
            kept, lost = cut_prose(tail, max(200, limit // 4))
            omitted += len(part.text.strip()) - len(tail) + lost
            out.append(kept)
        else:
            omitted += len(part.text.strip())
    text = "\n".join(chunk for chunk in out if chunk.strip())
    if omitted > 0:
        text += f"\n[…{omitted} chars omitted]"
    return text


def compress_message(role: str, content: str, *, aggressive: bool = False) -> str:
    """The per-role rules; deterministic, never touching the inside of code blocks or traces."""
    parts = _clean_prose(segments(content))
    text = join(parts).strip()
    if role == "tool":
        head, tail = (8, 4) if aggressive else (12, 6)
        if text.count("\n") + 1 > (15 if aggressive else 22):
            return head_tail_lines(text, head, tail)
        return text
    if role == "assistant" and len(text) > (800 if aggressive else 2000):
        return _trim_long(segments(text), 800 if aggressive else 2000, keep_last=True)
    if role == "user" and aggressive and len(text) > 600:
        return _trim_long(segments(text), 600, keep_last=False)
    return text


def skeleton(role: str, content: str) -> str:
    """Emergency form of an old message: its first sentence and its protected segments only."""
    parts = _clean_prose(segments(content))
    out: list[str] = []
    omitted = 0
    lead_done = False
    for part in parts:
        if part.protected:
            out.append(part.text)
        elif not lead_done and part.text.strip():
            first = sentences(part.text.strip().split("\n\n")[0])
            lead = first[0] if first else ""
            if role == "tool":
                lead = part.text.strip().split("\n")[0]
            out.append(lead)
            omitted += len(part.text.strip()) - len(lead)
            lead_done = True
        else:
            omitted += len(part.text.strip())
    text = "\n".join(chunk for chunk in out if chunk.strip())
    if omitted > 40:
        text += f"\n[…{omitted} chars omitted]"
    return text
