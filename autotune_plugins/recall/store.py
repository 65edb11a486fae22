"""The local memory store: conversations, their messages, and searchable memories (SQLite, WAL, FTS5).

Durability: every turn is written in one transaction and committed with ``synchronous=FULL``
before the caller is told it is saved, so a ``kill -9`` can lose only a turn that was never
acknowledged. Privacy: ``secure_delete`` is on, and :meth:`MemoryStore.forget_all` vacuums and
truncates the WAL so deleted text does not linger in the file.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations(
    id TEXT PRIMARY KEY, title TEXT, model TEXT, profile TEXT, system_prompt TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conv_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, model TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_conv ON messages(conv_id, id);
CREATE TABLE IF NOT EXISTS memories(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conv_id TEXT REFERENCES conversations(id) ON DELETE CASCADE,
    created_at REAL NOT NULL, model TEXT, text TEXT NOT NULL,
    embedding BLOB, embedding_model TEXT, user_msg_id INTEGER, assistant_msg_id INTEGER);
CREATE INDEX IF NOT EXISTS memories_conv ON memories(conv_id);
CREATE INDEX IF NOT EXISTS memories_emb ON memories(embedding_model, id);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='memories', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END;
"""

_STOP_TEXT = (
    "a an and are as at be been but by can could did do does for from had has have how i if in into is it its "
    "me my no not of on or our please should so tell than that the their them then there these they this to "
    "us was we were what when where which who why will with would you your yes ok user assistant about any "
    "some more most also just like get got make want need"
)
STOPWORDS = frozenset(_STOP_TEXT.split())
_WORD = re.compile(r"[a-z0-9][a-z0-9_\-]*")

#: chunks with less text than this are not worth recalling (the original's 60, docs/backend-facts.md#recall)
MIN_CHUNK_CHARS = 60


def stem(word: str) -> str:
    """A light suffix strip so "invoices"/"invoice" and "listening"/"listen" meet."""
    for suffix, repl, min_len in (("ies", "y", 5), ("ing", "", 6), ("ed", "", 5), ("es", "", 5), ("s", "", 4)):
        if word.endswith(suffix) and len(word) >= min_len and not word.endswith("ss"):
            return word[: -len(suffix)] + repl
    return word


def terms(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS}


def lexical_score(query_terms: set[str], text: str) -> float:
    """Share of the query's content words found in the text; one lone shared word counts half.

    Full-text hits are scored with this, so they face the same threshold as vector hits.
    """
    if not query_terms:
        return 0.0
    shared = len(query_terms & terms(text))
    score = shared / len(query_terms)
    return score if shared >= 2 else score * 0.5


def _pack(vector: Sequence[float]) -> tuple[bytes, int]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return array("f", (v / norm for v in vector)).tobytes(), len(vector)


def _dot(blob: bytes, query: array[float]) -> float:
    stored = array("f")
    stored.frombytes(blob)
    if len(stored) != len(query):
        return 0.0
    return sum(a * b for a, b in zip(stored, query, strict=True))


@dataclass(frozen=True, slots=True)
class Hit:
    id: int
    conv_id: str | None
    text: str
    created_at: float
    model: str | None
    score: float
    via: str  # "vector" | "text"


@dataclass(frozen=True, slots=True)
class Saved:
    user_msg_id: int
    assistant_msg_id: int
    memory_id: int | None


class MemoryStore:
    """One SQLite file; thread-safe (one connection behind a lock; callers use a worker thread)."""

    def __init__(
        self, path: Path | str, *, max_rows: int = 20_000, max_messages: int = 200_000, synchronous: str = "FULL"
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- conversations ------------------------------------------------------------------------------

    def create_conversation(
        self,
        *,
        model: str | None = None,
        profile: str | None = None,
        system_prompt: str | None = None,
        title: str | None = None,
        conv_id: str | None = None,
    ) -> str:
        conv_id = conv_id or uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO conversations(id, title, model, profile, system_prompt, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv_id, title, model, profile, system_prompt, now, now),
            )
        return conv_id

    def conversation(self, conv_id: str, *, with_messages: bool = True) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            if row is None:
                return None
            data = dict(row)
            if with_messages:
                data["messages"] = [
                    dict(r)
                    for r in self._db.execute(
                        "SELECT id, role, content, model, created_at FROM messages WHERE conv_id = ? ORDER BY id",
                        (conv_id,),
                    )
                ]
        return data

    def conversations(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conv_id = c.id) AS message_count "
                "FROM conversations c ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(r) for r in rows]

    def delete_conversation(self, conv_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM memories WHERE conv_id = ?", (conv_id,))
            return db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,)).rowcount > 0

    def export_markdown(self, conv_id: str) -> str | None:
        data = self.conversation(conv_id)
        if data is None:
            return None
        lines = [f"# {data.get('title') or 'Conversation ' + conv_id}", ""]
        if data.get("model"):
            lines += [f"Model: {data['model']}", ""]
        if data.get("system_prompt"):
            lines += ["## System", "", data["system_prompt"], ""]
        for message in data["messages"]:
            lines += [f"## {message['role'].capitalize()}", "", message["content"], ""]
        return "\n".join(lines)

    # -- turns and memories ---------------------------------------------------------------------------

    def add_turn(
        self,
        conv_id: str,
        user: str,
        assistant: str,
        *,
        model: str | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
        system_prompt: str | None = None,
    ) -> Saved:
        """Save one user turn and its reply, and (if long enough) a memory chunk; committed on return."""
        now = time.time()
        chunk = f"User: {user[:1000]}\nAssistant: {assistant[:2000]}"
        blob, _dims = _pack(embedding) if embedding else (None, 0)
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO conversations(id, model, system_prompt, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (conv_id, model, system_prompt, now, now),
            )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conv_id))
            user_id = db.execute(
                "INSERT INTO messages(conv_id, role, content, model, created_at) VALUES (?, 'user', ?, ?, ?)",
                (conv_id, user, model, now),
            ).lastrowid
            asst_id = db.execute(
                "INSERT INTO messages(conv_id, role, content, model, created_at) VALUES (?, 'assistant', ?, ?, ?)",
                (conv_id, assistant, model, now),
            ).lastrowid
            memory_id = None
            if len(chunk) >= MIN_CHUNK_CHARS + len("User: \nAssistant: "):
                memory_id = db.execute(
                    "INSERT INTO memories(conv_id, created_at, model, text, embedding, embedding_model, "
                    "user_msg_id, assistant_msg_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conv_id, now, model, chunk, blob, embedding_model if blob else None, user_id, asst_id),
                ).lastrowid
            self._prune(db)
        assert user_id is not None and asst_id is not None
        return Saved(user_id, asst_id, memory_id)

    def _prune(self, db: sqlite3.Connection) -> None:
        """Keep the store bounded: drop the oldest memories and messages beyond the limits."""
        extra = db.execute("SELECT count(*) FROM memories").fetchone()[0] - self.max_rows
        if extra > 0:
            db.execute("DELETE FROM memories WHERE id IN (SELECT id FROM memories ORDER BY id LIMIT ?)", (extra,))
        extra = db.execute("SELECT count(*) FROM messages").fetchone()[0] - self.max_messages
        if extra > 0:
            db.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (extra,))

    def has_memories(self) -> bool:
        """Whether there is anything to recall (one indexed row lookup)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM memories LIMIT 1").fetchone() is not None

    def memories(self, *, conv_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT id, conv_id, created_at, model, text, embedding_model FROM memories"
        args: tuple[Any, ...] = ()
        if conv_id is not None:
            sql += " WHERE conv_id = ?"
            args = (conv_id,)
        with self._lock:
            return [dict(r) for r in self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]

    def search(
        self,
        query: str,
        *,
        vector: Sequence[float] | None = None,
        embedding_model: str | None = None,
        exclude_conv: str | None = None,
        k: int = 3,
        min_score: float = 0.38,
        scan_limit: int = 2000,
    ) -> list[Hit]:
        """Vector hits (cosine) and full-text hits (scored lexically); the best score per memory wins."""
        q_terms = terms(query)
        found: dict[int, Hit] = {}
        with self._lock:
            if vector and embedding_model:
                packed, _ = _pack(vector)
                query_vec = array("f")
                query_vec.frombytes(packed)
                rows = self._db.execute(
                    "SELECT id, conv_id, text, created_at, model, embedding FROM memories "
                    "WHERE embedding_model = ? AND (? IS NULL OR conv_id IS NOT ?) ORDER BY id DESC LIMIT ?",
                    (embedding_model, exclude_conv, exclude_conv, scan_limit),
                ).fetchall()
                for row in rows:
                    score = _dot(row["embedding"], query_vec)
                    found[row["id"]] = Hit(
                        row["id"], row["conv_id"], row["text"], row["created_at"], row["model"], score, "vector"
                    )
            if q_terms:
                match = " OR ".join('"' + t.replace('"', "") + '"' for t in sorted(q_terms))
                rows = self._db.execute(
                    "SELECT m.id, m.conv_id, m.text, m.created_at, m.model FROM memories_fts f "
                    "JOIN memories m ON m.id = f.rowid "
                    "WHERE memories_fts MATCH ? AND (? IS NULL OR m.conv_id IS NOT ?) "
                    "ORDER BY f.rank LIMIT 50",
                    (match, exclude_conv, exclude_conv),
                ).fetchall()
                for row in rows:
                    score = lexical_score(q_terms, row["text"])
                    previous = found.get(row["id"])
                    if previous is None or score > previous.score:
                        found[row["id"]] = Hit(
                            row["id"], row["conv_id"], row["text"], row["created_at"], row["model"], score, "text"
                        )
        hits = sorted((h for h in found.values() if h.score >= min_score), key=lambda h: (-h.score, -h.id))
        return hits[:k]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            one = self._db.execute
            data = {
                "path": str(self.path),
                "conversations": one("SELECT count(*) FROM conversations").fetchone()[0],
                "messages": one("SELECT count(*) FROM messages").fetchone()[0],
                "memories": one("SELECT count(*) FROM memories").fetchone()[0],
                "with_embeddings": one("SELECT count(*) FROM memories WHERE embedding IS NOT NULL").fetchone()[0],
                "embedding_models": [
                    r[0] for r in one("SELECT DISTINCT embedding_model FROM memories WHERE embedding_model IS NOT NULL")
                ],
                "max_rows": self.max_rows,
            }
        data["bytes"] = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return data

    # -- forgetting -----------------------------------------------------------------------------------

    def forget(self, memory_id: int) -> bool:
        """Delete one memory and the two messages it was made from."""
        with self._tx() as db:
            row = db.execute("SELECT user_msg_id, assistant_msg_id FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
            db.execute("DELETE FROM messages WHERE id IN (?, ?)", (row[0], row[1]))
        return True

    def forget_all(self) -> None:
        """Really delete: rows, full-text index, then VACUUM and an emptied WAL."""
        with self._tx() as db:
            db.execute("DELETE FROM memories")
            db.execute("DELETE FROM messages")
            db.execute("DELETE FROM conversations")
            db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")
            db.execute("DELETE FROM sqlite_sequence")
        self.compact()

    def compact(self) -> None:
        with self._lock:
            self._db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity(self) -> str:
        with self._lock:
            result = str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
            self._db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")
        return result
