"""Slash commands of ``autotune chat``: each takes the app and the rest of the line."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..profiles import PROFILES
from .engine import LocalEngine, is_base_model

if TYPE_CHECKING:
    from .repl import ChatApp

Command = Callable[["ChatApp", str], Awaitable[None]]

HELP = [
    ("/help", "this list"),
    ("/new", "start a new conversation (the current one stays saved)"),
    ("/model [NAME]", "switch model, or list the available ones"),
    ("/profile [NAME]", f"switch profile ({', '.join(PROFILES)}), or show it"),
    ("/system [TEXT]", "set the system prompt (/system - clears it), or show it"),
    ("/history [ID]", "saved conversations; with an ID, resume that one"),
    ("/export [md|json] [FILE]", "write this conversation as Markdown (default) or JSON"),
    ("/plan", "what every plugin decided for the last answer, and why"),
    ("/metrics", "this session's TTFT, tokens/s and reloads"),
    ("/recall [QUERY]", "search the memory of earlier conversations (recall plugin)"),
    ("/quit", "leave (Ctrl-D too); the conversation is saved"),
]


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


async def cmd_help(app: ChatApp, arg: str) -> None:
    for name, text in HELP:
        app.say(f"{name:<26} {text}", "")
    app.say("Start a line with // to send a message that begins with /. Esc+Enter inserts a new line.")


async def cmd_new(app: ChatApp, arg: str) -> None:
    app.save()
    app.new_conversation()
    app.say(f"new conversation {app.conv.id}")


async def cmd_model(app: ChatApp, arg: str) -> None:
    if not arg:
        names = await app.engine.models()
        for name in names:
            app.say(("* " if name == app.model else "  ") + name, "")
        return
    try:
        backend = await app.engine.backend_of(arg)
    except Exception as exc:
        app.say(f"cannot use {arg}: {getattr(exc, 'message', exc)}", "red")
        return
    app.model, app.backend = arg, backend
    app.say(f"model {arg} on {backend}")
    if is_base_model(backend, arg):
        from .repl import BASE_MODEL_NOTE

        app.say(BASE_MODEL_NOTE.format(model=arg), "yellow")


async def cmd_profile(app: ChatApp, arg: str) -> None:
    if not arg:
        app.say(f"profile {app.profile or 'default (from the config)'}")
    elif app.set_profile(arg.lower()):
        app.say(f"profile {app.profile}")


async def cmd_system(app: ChatApp, arg: str) -> None:
    if not arg:
        app.say(f"system prompt: {app.system!r}" if app.system else "no system prompt")
        return
    app.system = None if arg == "-" else arg
    app.say("system prompt cleared" if app.system is None else "system prompt set")


async def cmd_history(app: ChatApp, arg: str) -> None:
    if arg:
        conv = app.store.load(arg) if _valid(arg) else None
        if conv is None:
            app.say(f"no saved conversation {arg!r}", "red")
            return
        app.save()
        app.resume(conv)
        app.say(f"resumed {conv.id}: {len(conv.turns)} messages, model {conv.model}")
        return
    convs = app.store.list()
    if not convs:
        app.say("no saved conversations")
    for conv in convs:
        mark = "*" if conv.id == app.conv.id else " "
        app.say(
            f"{mark} {conv.id}  {_when(conv.updated_at)}  {len(conv.turns):>3} msgs  {conv.model:<20} {conv.title}", ""
        )


def _valid(conv_id: str) -> bool:
    try:
        from .history import ChatStore

        ChatStore().path(conv_id)
    except ValueError:
        return False
    return True


async def cmd_export(app: ChatApp, arg: str) -> None:
    parts = arg.split(maxsplit=1)
    kind, rest = "md", arg
    if parts and parts[0].lower() in ("md", "markdown", "json"):
        kind = "json" if parts[0].lower() == "json" else "md"
        rest = parts[1] if len(parts) > 1 else ""
    suffix = ".json" if kind == "json" else ".md"
    target = Path(rest).expanduser() if rest else Path.cwd() / f"chat-{app.conv.id}{suffix}"
    text = json.dumps(app.conv.as_dict(), indent=2, ensure_ascii=False) if kind == "json" else app.conv.markdown()
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        app.say(f"cannot write {target}: {exc}", "red")
        return
    app.say(f"exported to {target}")


async def cmd_plan(app: ChatApp, arg: str) -> None:
    for line in app.engine.plan_lines():
        app.say(line, "")


async def cmd_metrics(app: ChatApp, arg: str) -> None:
    for key, value in (await app.engine.metrics()).items():
        app.say(f"{key}: {value}", "")


async def cmd_recall(app: ChatApp, arg: str) -> None:
    engine = app.engine
    if not isinstance(engine, LocalEngine):
        app.say("/recall searches the local memory store; run chat without --url (or `autotune memory search`)")
        return
    host = engine.host
    plugin: Any = host.plugin("recall") if host.enabled("recall") else None
    if plugin is None or not hasattr(plugin, "store"):
        app.say("the recall plugin is not enabled (autotune plugins enable recall)")
        return
    query = arg or next((t.content for t in app.conv.turns if t.role == "user"), "")
    if not query:
        app.say("give a query: /recall WORDS")
        return
    hits: list[Any] = []
    with contextlib.suppress(Exception):
        store = plugin.store(host)
        hits = await asyncio.to_thread(store.search, query, k=5, min_score=0.15, exclude_conv=app.conv.id)
    if not hits:
        app.say("no memories match")
    for hit in hits:
        flat = " ".join(str(hit.text).split())
        app.say(f"{hit.score:.2f}  [{hit.conv_id}]  {flat[:100]}", "")
    if hits:
        app.say("resume one with /history ID (if it was a chat conversation)")


async def cmd_quit(app: ChatApp, arg: str) -> None:
    app.running = False


COMMANDS: dict[str, Command] = {
    "help": cmd_help,
    "?": cmd_help,
    "new": cmd_new,
    "model": cmd_model,
    "profile": cmd_profile,
    "system": cmd_system,
    "history": cmd_history,
    "export": cmd_export,
    "plan": cmd_plan,
    "metrics": cmd_metrics,
    "recall": cmd_recall,
    "quit": cmd_quit,
    "exit": cmd_quit,
    "bye": cmd_quit,
}
