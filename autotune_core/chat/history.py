"""Saved chat conversations: one JSON file per conversation in ``data_dir()/chats``.

Why a file of its own rather than the recall plugin's database: the core must not depend on a plugin
that may be disabled, and a transcript needs what a memory store does not keep (the status of each
answer, interrupted turns, the profile). When recall is enabled it still remembers the turns (chat sends
the conversation id), and ``/recall`` searches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import data_dir
from ..messages import Message

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def chats_dir() -> Path:
    return data_dir() / "chats"


@dataclass
class Turn:
    """One message of a transcript, with the status line of an answer."""

    role: str
    content: str
    created_at: float = field(default_factory=time.time)
    interrupted: bool = False
    stats: dict[str, Any] | None = None


@dataclass
class Conversation:
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    model: str = ""
    profile: str | None = None
    system: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    turns: list[Turn] = field(default_factory=list)

    @property
    def title(self) -> str:
        first = next((t.content for t in self.turns if t.role == "user"), "")
        flat = " ".join(first.split())
        return flat[:60] + ("…" if len(flat) > 60 else "") if flat else "(empty)"

    def messages(self) -> list[Message]:
        """What the model sees: the system prompt and every turn (interrupted answers included)."""
        out = [Message(role="system", content=self.system)] if self.system else []
        out += [
            Message(role="user" if t.role == "user" else "assistant", content=t.content)
            for t in self.turns
            if t.role in ("user", "assistant") and t.content
        ]
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        turns = [Turn(**{k: v for k, v in t.items() if k in Turn.__dataclass_fields__}) for t in data.get("turns", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "turns"}
        return cls(**known, turns=turns)

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"Model: {self.model}", ""]
        if self.system:
            lines += ["## System", "", self.system, ""]
        for turn in self.turns:
            head = "User" if turn.role == "user" else "Assistant"
            lines += [f"## {head}" + (" (interrupted)" if turn.interrupted else ""), "", turn.content, ""]
        return "\n".join(lines)


class ChatStore:
    """Conversations as JSON files, written atomically (a crash never leaves half a file)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or chats_dir()

    def path(self, conv_id: str) -> Path:
        if not _ID.match(conv_id):
            raise ValueError(f"not a conversation id: {conv_id!r}")
        return self.root / f"{conv_id}.json"

    def save(self, conv: Conversation) -> Path:
        conv.updated_at = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(conv.id)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(conv.as_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, target)
        return target

    def load(self, conv_id: str) -> Conversation | None:
        try:
            data = json.loads(self.path(conv_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Conversation.from_dict(data) if isinstance(data, dict) else None

    def list(self, limit: int = 20) -> list[Conversation]:
        if not self.root.is_dir():
            return []
        files = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        out = []
        for file in files:
            with contextlib.suppress(OSError, ValueError, TypeError):
                data = json.loads(file.read_text(encoding="utf-8"))
                out.append(Conversation.from_dict(data))
        return out
