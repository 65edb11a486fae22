"""``autotune memory search | list | stats | forget``: the user's own view of what is remembered."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from .store import Hit, MemoryStore

if TYPE_CHECKING:
    from . import RecallPlugin


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _one_line(text: str, width: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _show_hits(hits: Sequence[Hit], as_json: bool) -> None:
    """Search results, one line each (or JSON for scripts); an empty result says so rather than print nothing."""
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": h.id,
                        "conversation": h.conv_id,
                        "score": round(h.score, 3),
                        "created": _when(h.created_at),
                        "text": h.text,
                    }
                    for h in hits
                ],
                indent=2,
            )
        )
        return
    if not hits:
        click.echo("no memories match")
    for hit in hits:
        click.echo(f"#{hit.id}  {hit.score:.2f}  {_when(hit.created_at)}  [{hit.conv_id}]  {_one_line(hit.text)}")


def _show_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Stored memories, newest first, one line each; an empty store says so."""
    if not rows:
        click.echo("no memories stored")
    for row in rows:
        click.echo(f"#{row['id']}  {_when(row['created_at'])}  [{row['conv_id']}]  {_one_line(row['text'])}")


def _exactly_one(memory_id: int | None, conv_id: str | None, everything: bool) -> None:
    """``forget`` deletes one kind of thing per call: an ambiguous command line deletes nothing."""
    chosen = sum(x is not None and x is not False for x in (memory_id, conv_id, everything or None))
    if chosen != 1:
        raise click.UsageError("give exactly one of ID, --conversation ID or --all")


def _forget(db: MemoryStore, memory_id: int | None, conv_id: str | None, everything: bool, yes: bool) -> None:
    """Delete what the one chosen option names; something that is not there is an error, not a silent no-op."""
    if everything:
        if not yes:
            click.confirm(f"Delete every conversation and memory in {db.path}?", abort=True)
        db.forget_all()
        click.echo(f"deleted everything; {db.path} vacuumed")
    elif conv_id is not None:
        if not db.delete_conversation(conv_id):
            raise click.ClickException(f"no conversation {conv_id!r}")
        db.compact()
        click.echo(f"deleted conversation {conv_id}")
    else:
        assert memory_id is not None
        if not db.forget(memory_id):
            raise click.ClickException(f"no memory #{memory_id}")
        click.echo(f"deleted memory #{memory_id}")


def memory_group(plugin: RecallPlugin) -> click.Group:
    """Built per plugin instance so the commands use that host's settings (database path)."""

    def store() -> MemoryStore:
        from autotune_core.cli.common import get_host

        return plugin.store(get_host())

    @click.group("memory")
    def memory() -> None:
        """Conversation memory (recall plugin): search, list, stats, forget. Stored locally only."""

    @memory.command("search")
    @click.argument("query")
    @click.option("--top", default=5, show_default=True, help="How many memories to show.")
    @click.option("--min-score", default=0.2, show_default=True, help="Lowest full-text score shown.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def search(query: str, top: int, min_score: float, as_json: bool) -> None:
        """Full-text search of memories (scored like recall's fallback)."""
        _show_hits(store().search(query, k=top, min_score=min_score), as_json)

    @memory.command("list")
    @click.option("--conversation", "conv_id", default=None, help="Only this conversation.")
    @click.option("--limit", default=20, show_default=True)
    def list_(conv_id: str | None, limit: int) -> None:
        """The newest memories."""
        _show_rows(store().memories(conv_id=conv_id, limit=limit))

    @memory.command("stats")
    def stats() -> None:
        """Counts, size on disk and where the file is."""
        for key, value in store().stats().items():
            click.echo(f"{key}: {value}")

    @memory.command("forget")
    @click.argument("memory_id", required=False, type=int)
    @click.option("--conversation", "conv_id", default=None, help="Delete a whole conversation.")
    @click.option("--all", "everything", is_flag=True, help="Delete everything and compact the file.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def forget(memory_id: int | None, conv_id: str | None, everything: bool, yes: bool) -> None:
        """Delete one memory (ID), a conversation (--conversation ID) or everything (--all)."""
        _exactly_one(memory_id, conv_id, everything)  # before store(): a usage error opens no database
        _forget(store(), memory_id, conv_id, everything, yes)

    return memory
