"""``autotune chat``, ``autotune run MODEL`` and ``autotune unload [MODEL]``: the commands a person starts with."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from ..errors import AutotuneError
from ..profiles import PROFILES
from .common import get_host, run

#: fit verdicts worth a warning before chat starts
WORRYING = ("MARGINAL", "SWAP_RISK", "OOM")


def _start_chat(
    model: str | None,
    profile: str | None,
    system: str | None,
    no_swap: bool,
    url: str | None,
    resume: str | None,
    max_tokens: int | None,
    plain: bool,
    api_key: str | None,
    prompt: str | None = None,
) -> None:
    from ..chat.engine import ChatEngine, LocalEngine, RemoteEngine
    from ..chat.history import ChatStore
    from ..chat.render import make_console
    from ..chat.repl import ChatApp, run_chat

    store = ChatStore()
    conv = None
    if resume:
        try:
            conv = store.load(resume)
        except ValueError:
            conv = None
        if conv is None:
            raise click.ClickException(f"no saved conversation {resume!r} (see /history in chat)")
    engine: ChatEngine
    if url:
        engine = RemoteEngine(url, api_key or os.environ.get("AUTOTUNE_API_KEY"))
    else:
        host = get_host()
        if no_swap:
            _require_noswap(host)
        engine = LocalEngine(host)
    app = ChatApp(
        engine=engine,
        console=make_console(),
        model=model or "",
        profile=profile,
        system=system,
        max_tokens=max_tokens,
        markdown=not plain,
        store=store,
    )
    if prompt is not None:  # one answer: only the answer on stdout, the rest on stderr
        from rich.console import Console

        app.info = Console(stderr=True, highlight=False)
    if conv is not None:
        app.resume(conv)
        if model:
            app.model = model
        if system is not None:
            app.system = system
    else:
        app.new_conversation()
    asyncio.run(run_chat(app, prompt))


def _require_noswap(host: Any) -> None:
    """``--no-swap``: the guard that keeps KV within free memory must be on (it is by default)."""
    if not host.enabled("noswap-guard"):
        raise click.ClickException("--no-swap needs the noswap-guard plugin: autotune plugins enable noswap-guard")


def _chat_options(func: Any) -> Any:
    options = [
        click.option("--profile", type=click.Choice(list(PROFILES)), default=None, help="Profile for this chat."),
        click.option("--system", default=None, help="System prompt."),
        click.option("--no-swap", is_flag=True, help="Refuse to start unless the no-swap guard is on."),
        click.option(
            "--url", default=None, help="Chat through a running autotune server (e.g. http://127.0.0.1:8765)."
        ),
        click.option("--api-key", default=None, help="The server's API key with --url (or AUTOTUNE_API_KEY)."),
        click.option("--resume", default=None, metavar="ID", help="Continue a saved conversation."),
        click.option("--max-tokens", type=click.IntRange(1), default=None, help="Cap each answer's length."),
        click.option("--plain", is_flag=True, help="Plain text output (no Markdown rendering)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


async def _fit(model: str, profile: str | None) -> tuple[str, dict[str, Any] | None, list[str]]:
    """The model-fit verdict for MODEL, from planning a probe request (nothing is sent to the model)."""
    from ..messages import ChatRequest, Message
    from ..pipeline import Pipeline

    host = get_host()
    pipeline = Pipeline(host)
    try:
        prepared = await pipeline.prepare(
            ChatRequest(model=model, profile=profile, messages=[Message(role="user", content="hello")])
        )
    finally:
        await host.stop()
    plan = prepared.plan
    fit = next((entry for entry in plan.trace if entry.knob == "fit"), None)
    if fit is None:
        return prepared.backend.name, None, list(plan.advice)
    return prepared.backend.name, {"verdict": fit.new, "summary": fit.reason}, list(plan.advice)


def register(cli: click.Group) -> None:
    """Adds ``chat``, ``run`` and ``unload`` to ``cli``."""

    @cli.command("chat")
    @click.option("--model", "-m", default=None, help="Model (default: a running backend's best, else embedded).")
    @_chat_options
    def chat_command(
        model: str | None,
        profile: str | None,
        system: str | None,
        no_swap: bool,
        url: str | None,
        api_key: str | None,
        resume: str | None,
        max_tokens: int | None,
        plain: bool,
    ) -> None:
        """Chat in the terminal through autotune's pipeline (in-process, or a server with --url)."""
        _start_chat(model, profile, system, no_swap, url, resume, max_tokens, plain, api_key)

    @cli.command("run")
    @click.argument("model")
    @click.argument("prompt", required=False)
    @click.option("--yes", "-y", is_flag=True, help="Start even when the fit check warns.")
    @_chat_options
    def run_command(
        model: str,
        prompt: str | None,
        yes: bool,
        profile: str | None,
        system: str | None,
        no_swap: bool,
        url: str | None,
        api_key: str | None,
        resume: str | None,
        max_tokens: int | None,
        plain: bool,
    ) -> None:
        """Check that MODEL fits this machine, warn with a lighter option if it is tight, then chat.

        With PROMPT, answer it once and exit (the answer on stdout, the rest on stderr), as `ollama run` does."""
        if url is None:
            try:
                backend, fit, advice = run(_fit(model, profile))
            except AutotuneError as exc:
                raise click.ClickException(exc.message) from None
            from .common import reset_host

            reset_host()  # the chat gets a fresh host (the probe's backends are closed)
            if fit is None:
                click.echo(
                    f"fit: not assessed for {model} on {backend} (model-fit plugin off, or already loaded)",
                    err=prompt is not None,
                )
            else:
                click.echo(f"fit: {fit['summary']}", err=prompt is not None)
                if fit["verdict"] in WORRYING:
                    click.secho(f"warning: {model} is {fit['verdict']} on this machine", fg="yellow", err=True)
                    for line in advice:
                        click.secho(f"  {line}", fg="yellow", err=True)
                    ask = not yes and prompt is None  # a one-shot prompt warns and goes on
                    if ask and not click.confirm(
                        "start the chat anyway?", default=fit["verdict"] == "MARGINAL", err=True
                    ):
                        raise click.exceptions.Exit(1)
        _start_chat(model, profile, system, no_swap, url, resume, max_tokens, plain, api_key, prompt)

    @cli.command("unload")
    @click.argument("model", required=False)
    def unload_command(model: str | None) -> None:
        """Free MODEL now (or every loaded model) on each backend that can unload (Ollama, embedded, LM Studio)."""
        freed = run(_unload(model))
        if not freed:
            click.echo("nothing unloaded" + (f": {model} is not loaded on a backend that can unload" if model else ""))
        for backend, name in freed:
            click.echo(f"unloaded {name} from {backend}")


def _unload_via_server(model: str | None) -> list[tuple[str, str]] | None:
    """With ``autotune serve`` running, free models through it (its embedded worker is its own, not ours): the
    models its ``/api/ps`` lists, each by Ollama's empty ``/api/generate`` with ``keep_alive`` 0. None when
    no server answers."""
    import httpx

    from ..server.launcher import connect_host, health

    server = get_host().config.server
    base = f"http://{connect_host(server.host)}:{server.port}"
    if health(base, server.api_key) is None:
        return None
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    freed: list[tuple[str, str]] = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        loaded = client.get("/api/ps").json().get("models") or []
        for entry in loaded:
            name = str(entry.get("name") or entry.get("model") or "")
            if not name or (model is not None and not _same(name, model)):
                continue
            answer = client.post("/api/generate", json={"model": name, "keep_alive": 0})
            if answer.status_code == 200 and answer.json().get("done_reason") == "unload":
                freed.append((str((entry.get("autotune") or {}).get("backend") or "server"), name))
            else:
                click.echo(f"warning: the server could not unload {name}: {answer.text[:200]}", err=True)
    return freed


async def _unload(model: str | None) -> list[tuple[str, str]]:
    via_server = await asyncio.to_thread(_unload_via_server, model)
    if via_server is not None:
        return via_server
    host = get_host()
    freed: list[tuple[str, str]] = []
    try:
        for name in sorted(host.backend_classes):
            backend = host.backend(name)
            try:
                if not (await asyncio.wait_for(backend.available(), 10)).ok:
                    continue
                loaded = [m.name for m in await asyncio.wait_for(backend.loaded_models(), 10)]
            except Exception:
                continue
            targets = loaded if model is None else [m for m in loaded if _same(m, model)]
            if model is not None and not targets and name == "llamacpp":
                targets = []  # the embedded engine lives in this process: nothing of another process to free
            for target in targets:
                try:
                    if await asyncio.wait_for(backend.unload(target), 30):
                        freed.append((name, target))
                except Exception as exc:
                    click.echo(f"warning: {name} could not unload {target}: {exc}", err=True)
    finally:
        await host.stop()
    return freed


def _same(loaded: str, wanted: str) -> bool:
    a, b = loaded.lower(), wanted.lower()
    return a == b or a.removesuffix(":latest") == b.removesuffix(":latest")
