"""What the compressor learnt about each message, remembered across requests.

Turn N of a conversation resends turns 1..N-1 unchanged, and every per-message step of the compressor
(importance score, compressed and skeleton forms, fact candidates, topics) depends only on the message's
role and text. :class:`Memo` keeps those results in a bounded LRU keyed by ``(role, content)`` itself, so
a request pays the regex work only for messages it has not seen; what is left per request is a walk over
the list with dictionary lookups. Keys compare by the full text (no hash can alias another message: an
edited earlier message is a new key), and :class:`Direct` computes the same answers without remembering,
which is what :func:`~.window.compress_history` uses unless it is given a memo.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from typing import Any, Protocol

from autotune_core import Message

from .classifier import score_message
from .compress import compress_message, has_protected, skeleton
from .facts import Candidate, Fold, fact_candidates, topics_of

__all__ = ["DIRECT", "Analyzer", "Direct", "Memo", "paired"]


def paired(message: Message) -> bool:
    """Part of a tool-call round: dropping one side alone would break the backend's template."""
    return message.role == "tool" or bool(message.tool_calls)


def _plain(message: Message) -> bool:
    """Role and text only: a compressed copy of it can be built once and shared."""
    return not (
        message.tool_calls
        or message.images
        or message.tool_call_id is not None
        or message.name is not None
        or message.thinking is not None
    )


class Analyzer(Protocol):
    """The per-message steps of the compressor; pure functions of (role, content)."""

    def score(self, role: str, content: str) -> float: ...
    def compressed(self, role: str, content: str, aggressive: bool) -> str: ...
    def skeleton(self, role: str, content: str) -> str: ...
    def protected(self, role: str, content: str) -> bool: ...
    def candidates(self, role: str, content: str) -> tuple[Candidate, ...]: ...
    def topics(self, role: str, content: str, left: bool, right: bool) -> frozenset[str]: ...
    def shrink(self, message: Message, mode: str) -> Message | None: ...
    def ids(self, messages: list[Message]) -> list[int] | None: ...
    def resume(self, messages: list[Message], upto: int, ids: list[int] | None) -> tuple[Fold, int, Any]: ...
    def checkpoint(self, token: Any, fold: Fold) -> None: ...


class Direct:
    """Computes every answer afresh (the reference the memo must equal)."""

    def score(self, role: str, content: str) -> float:
        return score_message(role, content)

    def compressed(self, role: str, content: str, aggressive: bool) -> str:
        return compress_message(role, content, aggressive=aggressive)

    def skeleton(self, role: str, content: str) -> str:
        return skeleton(role, content)

    def protected(self, role: str, content: str) -> bool:
        return has_protected(content)

    def candidates(self, role: str, content: str) -> tuple[Candidate, ...]:
        return fact_candidates(role, content)

    def topics(self, role: str, content: str, left: bool, right: bool) -> frozenset[str]:
        return topics_of(content, left=left, right=right)

    def shrink(self, message: Message, mode: str) -> Message | None:
        """The message in ``mode`` (verbatim, normal, aggressive, skeleton); None = dropped (skeleton only:
        the facts block carries what it said)."""
        if mode == "verbatim":
            return message
        if mode == "skeleton":
            if not paired(message) and not self.protected(message.role, message.content):
                return None
            content = self.skeleton(message.role, message.content)
        else:
            content = self.compressed(message.role, message.content, mode == "aggressive")
        return message if content == message.content else self._copy(message, content, mode)

    def _copy(self, message: Message, content: str, mode: str) -> Message:
        return message.model_copy(update={"content": content})

    def ids(self, messages: list[Message]) -> list[int] | None:
        """Identities of the messages' texts for :meth:`resume` (None: nothing is remembered)."""
        return None

    def resume(self, messages: list[Message], upto: int, ids: list[int] | None) -> tuple[Fold, int, Any]:
        """Where a facts fold over ``messages[:upto]`` may start: (fold so far, index, token). ``ids``: the
        :meth:`ids` of a list that ``messages`` starts, when the caller has them."""
        return Fold(), 0, None

    def checkpoint(self, token: Any, fold: Fold) -> None:
        """The fold over ``messages[:upto]`` of the matching :meth:`resume`, for lists that start the same."""


DIRECT = Direct()


class _Entry:
    """The results for one (role, content), filled in as they are asked for."""

    __slots__ = ("candidates", "compressed", "copies", "protected", "score", "skeleton", "topics", "uid")

    def __init__(self, uid: int) -> None:
        #: never reused, so a fold remembered for a list of messages names exactly those texts
        self.uid = uid
        self.score: float | None = None
        self.compressed: dict[bool, str] = {}
        self.skeleton: str | None = None
        self.protected: bool | None = None
        self.candidates: tuple[Candidate, ...] | None = None
        self.topics: dict[tuple[bool, bool], frozenset[str]] = {}
        self.copies: dict[str, Message] = {}


class Memo(Direct):
    """A bounded LRU of per-message results: at most ``max_entries`` messages and about ``max_chars`` of
    their text (the oldest used are dropped first). ``max_entries`` 0 turns remembering off.

    The compressed copy of a plain message (role and text only) is built once and handed to every request
    that needs it (a pydantic copy per message per request was the largest cost left); it is checked
    unchanged before each reuse, so a hook that edited one in place only costs a rebuild.
    """

    def __init__(self, max_entries: int = 4096, max_chars: int = 8_000_000, max_folds: int = 32) -> None:
        self.max_entries = max(0, max_entries)
        self.max_chars = max(0, max_chars)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._chars = 0
        self._uids = itertools.count()
        #: the last entry asked for: a message's steps are asked for one after another
        self._last: tuple[str, str, _Entry] | None = None
        #: facts folds by the uids of the messages they cover, newest first
        self._folds: deque[tuple[tuple[int, ...], Fold]] = deque(maxlen=max(1, max_folds))
        self._lock = threading.Lock()  # hooks run on the event loop, but the CLI may plan from threads
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def chars(self) -> int:
        """Characters of message text held (the bound ``max_chars`` applies to this)."""
        return self._chars

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = 0
            self._last = None
            self._folds.clear()

    def _entry(self, role: str, content: str) -> _Entry:
        last = self._last
        if last is not None and last[1] is content and last[0] == role:
            return last[2]
        key = (role, content)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                self._last = (role, content, entry)
                return entry
            self.misses += 1
            entry = _Entry(next(self._uids))
            if self.max_entries and len(content) <= self.max_chars:
                self._last = (role, content, entry)
                self._entries[key] = entry
                self._chars += len(content)
                while len(self._entries) > self.max_entries or self._chars > self.max_chars:
                    (_, old), _ = self._entries.popitem(last=False)
                    self._chars -= len(old)
            return entry

    def score(self, role: str, content: str) -> float:
        entry = self._entry(role, content)
        if entry.score is None:
            entry.score = score_message(role, content)
        return entry.score

    def compressed(self, role: str, content: str, aggressive: bool) -> str:
        entry = self._entry(role, content)
        text = entry.compressed.get(aggressive)
        if text is None:
            text = entry.compressed[aggressive] = compress_message(role, content, aggressive=aggressive)
        return text

    def skeleton(self, role: str, content: str) -> str:
        entry = self._entry(role, content)
        if entry.skeleton is None:
            entry.skeleton = skeleton(role, content)
        return entry.skeleton

    def protected(self, role: str, content: str) -> bool:
        entry = self._entry(role, content)
        if entry.protected is None:
            entry.protected = has_protected(content)
        return entry.protected

    def candidates(self, role: str, content: str) -> tuple[Candidate, ...]:
        entry = self._entry(role, content)
        if entry.candidates is None:
            entry.candidates = fact_candidates(role, content)
        return entry.candidates

    def topics(self, role: str, content: str, left: bool, right: bool) -> frozenset[str]:
        entry = self._entry(role, content)
        found = entry.topics.get((left, right))
        if found is None:
            found = entry.topics[(left, right)] = topics_of(content, left=left, right=right)
        return found

    def _copy(self, message: Message, content: str, mode: str) -> Message:
        if not _plain(message):
            return message.model_copy(update={"content": content})
        entry = self._entry(message.role, message.content)
        copy = entry.copies.get(mode)
        if copy is None or copy.content is not content or copy.role != message.role or not _plain(copy):
            copy = entry.copies[mode] = Message(role=message.role, content=content)
        return copy

    def ids(self, messages: list[Message]) -> list[int] | None:
        return [self._entry(m.role, m.content).uid for m in messages]

    def resume(self, messages: list[Message], upto: int, ids: list[int] | None) -> tuple[Fold, int, Any]:
        uids = ids[:upto] if ids is not None and len(ids) >= upto else self.ids(messages[:upto]) or []
        best: tuple[tuple[int, ...], Fold] | None = None
        with self._lock:
            folds = list(self._folds)
        for covered, fold in folds:
            n = len(covered)
            if (
                n <= upto
                and (best is None or n > len(best[0]))
                and (n == 0 or uids[n - 1] == covered[-1])
                and tuple(uids[:n]) == covered
            ):
                best = (covered, fold)
        if best is None:
            return Fold(), 0, uids
        return best[1].copy(), len(best[0]), None if len(best[0]) == upto else uids

    def checkpoint(self, token: Any, fold: Fold) -> None:
        if token is None or not self.max_entries:
            return  # already remembered (or remembering is off)
        with self._lock:
            self._folds.appendleft((tuple(token), fold.copy()))
