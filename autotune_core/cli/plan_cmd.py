"""``autotune plan`` (a dry run that shows every plugin's decision) and ``autotune doctor`` (health checks).

Both build the same host the server would (config file + environment) and go through the real
:class:`~autotune_core.pipeline.Pipeline`, so what they print is what a request would get. A plan needs a
reachable backend that serves the model: planning against made-up capabilities would print knobs that the
real server may ignore, which is exactly the confusion the trace exists to prevent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import click

from ..config import parse_value
from ..errors import AutotuneError, ConfigError, ModelNotFound
from ..messages import ChatRequest, Message
from . import doctor_engine
from .common import echo_json, get_host, run, table

#: fields copied verbatim from an OpenAI or Ollama body into a ChatRequest
_COPY = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "think",
    "keep_alive",
    "stream",
)


def _text(content: Any) -> str:
    """OpenAI content may be a list of parts; keep the text parts."""
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return "" if content is None else str(content)


def request_from_body(body: dict[str, Any], model: str) -> ChatRequest:
    """An OpenAI ``/v1/chat/completions`` or Ollama ``/api/chat`` / ``/api/generate`` body as a ChatRequest."""
    options = dict(body.get("options") or {})
    messages = [
        Message(role=m.get("role", "user"), content=_text(m.get("content")))
        for m in body.get("messages") or []
        if isinstance(m, dict)
    ]
    if not messages and body.get("prompt"):
        if body.get("system"):
            messages.append(Message(role="system", content=str(body["system"])))
        messages.append(Message(role="user", content=str(body["prompt"])))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", options.get("num_predict")))
    fields: dict[str, Any] = {key: body[key] for key in _COPY if key in body and body[key] is not None}
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    dialect = "ollama" if "options" in body or "prompt" in body else "openai"
    return ChatRequest(
        model=body.get("model") or model,
        messages=messages,
        options=options,
        dialect=dialect,
        max_tokens=int(max_tokens) if max_tokens is not None and int(max_tokens) >= 0 else None,
        **fields,
    )


async def _plan(model: str, request: ChatRequest, backend_name: str | None) -> dict[str, Any]:
    from ..pipeline import Pipeline

    host = get_host()
    pipeline = Pipeline(host)
    target = f"{backend_name}/{model}" if backend_name else model
    if backend_name and backend_name not in host.backend_classes:
        raise click.ClickException(
            f"no backend named {backend_name!r}; registered: {', '.join(sorted(host.backend_classes)) or 'none'}"
        )
    try:
        request, backend = await pipeline.resolve(request.model_copy(update={"model": target}))
    except ModelNotFound as exc:
        raise click.ClickException(
            f"{exc.message}. `autotune plan` needs a reachable backend serving the model: "
            "start one, or name it with --backend"
        ) from None
    if backend_name:
        availability = await backend.available()
        if not availability.ok:
            raise click.ClickException(f"backend {backend_name!r} is not reachable: {availability.reason}")
    prepared = await pipeline.plan(request, backend)  # the same lifecycle the server runs, without the send
    info = prepared.ctx.model
    try:
        wire = backend.wire_options(prepared.plan, prepared.request)
    except Exception as exc:  # a backend bug must not hide the plan
        wire = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "plan": prepared.plan,
        "wire": wire,
        "planning_ms": prepared.planning_ms,
        "backend": backend.name,
        "model_info": info,
    }


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        out[key.strip()] = parse_value(value.strip())
    return out


def _show(value: Any) -> str:
    return "—" if value is None else json.dumps(value) if isinstance(value, dict | list) else str(value)


def _print_plan(data: dict[str, Any]) -> None:
    plan = data["plan"]
    click.echo(
        f"model {plan.model} on {data['backend']}, profile {plan.profile}, prompt {plan.prompt_tokens} "
        f"tokens ({'counted' if plan.prompt_tokens_exact else 'estimated'}), planned in "
        f"{data['planning_ms']:.2f} ms"
    )
    knobs = (
        "num_ctx",
        "kv_type",
        "flash_attn",
        "num_batch",
        "num_keep",
        "num_thread",
        "keep_alive",
        "max_tokens",
        "parallel",
    )
    rows = [(knob, _show(getattr(plan, knob)), plan.applied.get(knob, "")) for knob in knobs]
    click.echo("\n" + table(("knob", "value", "applied"), rows))
    if plan.pins:
        click.echo("\nyour values (sent unchanged unless a safety guard had to lower them):")
        pinned = [
            (v["knob"], _show(v["asked"]), v["origin"], _show(v["sent"]), "kept" if v["kept"] else "LOWERED")
            for v in plan.client_values()
        ]
        click.echo(table(("knob", "asked", "from", "sent", ""), pinned))
    if plan.warnings:
        click.echo("\nwarnings:")
        for line in plan.warnings:
            click.echo(f"  ! {line}")
    click.echo("\ntrace (in order):")
    for entry in plan.trace:
        change = (
            f"{_show(entry.proposed)} proposed, kept {_show(entry.new)}"
            if entry.kept
            else f"{_show(entry.old)} → {_show(entry.new)}"
        )
        click.echo(f"  {entry.plugin:<16} {entry.knob:<11} {change}  {entry.reason}")
    if plan.advice:
        click.echo("\nadvice:")
        for line in plan.advice:
            click.echo(f"  - {line}")
    if plan.flags:
        click.echo("\nflags: " + json.dumps(plan.flags, default=str))
    click.echo("\nwire options: " + json.dumps(data["wire"], default=str))


@click.command("plan")
@click.argument("model")
@click.option("-m", "--message", "messages", multiple=True, help="A user message (repeatable).")
@click.option("--system", default=None, help="A system prompt.")
@click.option(
    "--file",
    "body_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A request body (OpenAI or Ollama JSON).",
)
@click.option("--profile", type=click.Choice(["fast", "balanced", "quality"]), default=None)
@click.option("--max-tokens", type=click.IntRange(min=0), default=None)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A client option as an Ollama client would send it (num_ctx=8192); repeatable.",
)
@click.option("--keep-alive", default=None, help='The client\'s keep_alive ("5m", 0, -1).')
@click.option("--backend", "backend_name", default=None, help="Plan against this backend only.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(
    model: str,
    messages: tuple[str, ...],
    system: str | None,
    body_file: Path | None,
    profile: str | None,
    max_tokens: int | None,
    options: tuple[str, ...],
    keep_alive: str | None,
    backend_name: str | None,
    as_json: bool,
) -> None:
    """Dry run: how MODEL's request would be tuned, with every plugin's step, advice and wire options."""
    if body_file is not None:
        try:
            body = json.loads(body_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read {body_file}: {exc}") from None
        if not isinstance(body, dict):
            raise click.ClickException(f"{body_file}: expected a JSON object")
        request = request_from_body(body, model)
    else:
        msgs = [Message(role="system", content=system)] if system else []
        msgs += [Message(role="user", content=text) for text in messages or ("Hello!",)]
        request = ChatRequest(model=model, messages=msgs)
    updates: dict[str, Any] = {"model": model}
    if profile:
        updates["profile"] = profile
    if max_tokens is not None:
        updates["max_tokens"] = max_tokens
    if options:
        updates["options"] = {**request.options, **_parse_options(options)}
    if keep_alive is not None:
        updates["keep_alive"] = parse_value(keep_alive)
    request = request.model_copy(update=updates)
    data = run(_plan(model, request, backend_name))
    if as_json:
        plan = data["plan"]
        echo_json(
            {
                "backend": data["backend"],
                "planning_ms": round(data["planning_ms"], 3),
                "plan": plan.model_dump(exclude={"messages"}),
                "wire_options": data["wire"],
                "client_values": plan.client_values(),
                "trace_compact": plan.compact_trace(),
            }
        )
    else:
        _print_plan(data)


# -- doctor -------------------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b")


class _Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, status: str, check: str, detail: str) -> None:
        self.rows.append({"status": status, "check": check, "detail": detail})

    @property
    def failed(self) -> bool:
        return any(row["status"] == "fail" for row in self.rows)


async def _with_timeout(coro: Any, seconds: float) -> Any:
    return await asyncio.wait_for(coro, timeout=seconds)


async def _check_backends(report: _Report, model: str | None, timeout: float) -> None:
    from ..pipeline import Pipeline

    host = get_host()
    pipeline = Pipeline(host)
    reachable = 0
    for name in pipeline.resolver.candidates():
        try:
            backend = host.backend(name)
            availability = await _with_timeout(backend.available(), timeout)
        except Exception as exc:
            report.add("warn", f"backend {name}", f"check failed: {type(exc).__name__}: {exc}")
            continue
        if not availability.ok:
            report.add("warn", f"backend {name}", f"not reachable: {availability.reason or 'no answer'}")
            continue
        reachable += 1
        report.add("ok", f"backend {name}", f"reachable, version {availability.version or 'unknown'}")
        await doctor_engine.self_test(report, backend)
        try:
            models = await _with_timeout(backend.list_models(), timeout)
        except Exception as exc:
            report.add("warn", f"backend {name}", f"cannot list models: {exc}")
            continue
        names = [entry.name for entry in models]
        target = model if model in names else (names[0] if names and model is None else None)
        if target is None:
            report.add(
                "warn",
                f"backend {name}",
                f"serves {len(names)} model(s)" + (f"; {model!r} is not one of them" if model else ""),
            )
            continue
        await _server_env_advice(report, pipeline, backend, target)
    if reachable == 0:
        report.add(
            "fail",
            "backends",
            "no backend is reachable: start Ollama / a llama-server, or configure "
            "the embedded llamacpp backend (backends.llamacpp.model_path)",
        )


async def _server_env_advice(report: _Report, pipeline: Any, backend: Any, model: str) -> None:
    """Plan a tiny request and compare its KV / flash-attention decisions with the server's settings."""
    request = ChatRequest(model=model, messages=[Message(role="user", content="Hello!")])
    try:
        info = await pipeline.model_info(backend, model)
        prepared = await pipeline.plan(request, backend, info)
    except AutotuneError as exc:
        report.add("warn", f"plan {backend.name}/{model}", exc.message)
        return
    plan = prepared.plan
    report.add(
        "ok",
        f"plan {backend.name}/{model}",
        f"planned in {prepared.planning_ms:.2f} ms: "
        f"num_ctx={plan.num_ctx} kv={plan.kv_type or plan.applied.get('kv_type', '—')}",
    )
    caps = backend.capabilities()
    for knob in ("kv_type", "flash_attn"):
        support = caps.knobs.get(knob)
        if support is None or support.scope.value != "server_env":
            continue
        env = _ENV_NAME.search(support.how or "")
        decided: list[Any] = [entry.new for entry in plan.steps(knob) if entry.new is not None]
        if not decided and env and any(env.group(1) in line for line in plan.advice):
            decided = [True]  # advice-only knobs (flash attention) are never set on the plan
        if not decided:
            continue
        wanted = decided[-1]
        current = os.environ.get(env.group(1)) if env else None
        if env and current is not None:
            same = str(current).lower() in (str(wanted).lower(), "1" if wanted is True else "")
            report.add(
                "ok" if same else "advice",
                f"{backend.name} {knob}",
                f"this shell has {env.group(1)}={current}; autotune would choose {wanted}"
                + ("" if same else f": set {support.how}"),
            )
        else:
            report.add(
                "advice",
                f"{backend.name} {knob}",
                f"autotune would choose {wanted} but {backend.name} sets it server-wide: {support.how}",
            )
    for line in plan.advice:
        if not any(line.startswith(prefix) for prefix in ("kv_type=", "flash_attn=")):
            report.add("advice", f"{backend.name}/{model}", line)


def _check_memory(report: _Report) -> None:
    host = get_host()
    try:
        hardware = host.hardware
    except Exception as exc:
        report.add("warn", "hardware", f"detection failed: {type(exc).__name__}: {exc}")
        return
    gib = 1024**3
    budget = hardware.memory_budget_bytes()
    report.add(
        "ok" if budget > gib else "warn",
        "memory budget",
        f"{budget / gib:.1f} GiB for models + KV after a 1.5 GiB margin "
        f"(RAM {hardware.ram_total_bytes / gib:.1f} GiB, {hardware.ram_available_bytes / gib:.1f} available"
        + (f", GPU {hardware.primary_gpu.name}" if hardware.primary_gpu else "")
        + ")",
    )
    try:
        import psutil

        ram = psutil.virtual_memory().percent
        swap = psutil.swap_memory()
    except Exception as exc:
        report.add("warn", "pressure", f"cannot read memory use: {exc}")
        return
    tier = host.pressure.tier if host.pressure is not None else None
    status = "fail" if ram >= 93 else "warn" if ram >= 80 else "ok"
    report.add(
        status,
        "pressure",
        f"RAM {ram:.0f}% used, swap {swap.percent:.0f}% used"
        + (f", sampler tier {tier}" if tier else "")
        + ("" if status == "ok" else ": contexts will be reduced; close other programs"),
    )


def _check_config_and_plugins(report: _Report) -> bool:
    from ..config import load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        report.add("fail", "config", exc.message)
        return False
    report.add("ok", "config", f"valid ({settings.source}), profile {settings.profile}")
    try:
        host = get_host()
    except AutotuneError as exc:
        report.add("fail", "plugins", exc.message)
        return False
    for name, record in sorted(host.records.items()):
        if record.status == "error":
            report.add("fail", f"plugin {name}", record.reason)
        elif record.failures:
            report.add("warn", f"plugin {name}", f"{record.failures} failure(s); last: {record.last_failure}")
        elif record.enabled:
            try:
                host.plugin_settings(name)
            except ConfigError as exc:
                report.add("fail", f"plugin {name}", exc.message)
    enabled = sum(1 for record in host.records.values() if record.enabled)
    report.add("ok", "plugins", f"{enabled} enabled, {len(host.records) - enabled} not loaded")
    return True


@click.command("doctor")
@click.option("--model", default=None, help="Plan this model for the server-settings comparison.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per backend check.")
@click.option("--json", "as_json", is_flag=True)
def doctor_command(model: str | None, timeout: float, as_json: bool) -> None:
    """Check backends, server settings, memory, config and plugins. Exit code 1 when something is broken."""
    report = _Report()
    if _check_config_and_plugins(report):
        _check_memory(report)
        run(_check_backends(report, model, timeout))
        doctor_engine.running_server(report, get_host().config)
    if as_json:
        echo_json({"ok": not report.failed, "checks": report.rows})
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "advice": "tip "}
        for row in report.rows:
            click.echo(f"[{marks.get(row['status'], row['status'])}] {row['check']}: {row['detail']}")
        click.echo("doctor: " + ("problems found" if report.failed else "all essential checks passed"))
    if report.failed:
        raise click.exceptions.Exit(1)


def register(cli: click.Group) -> None:
    """Adds ``plan`` and ``doctor`` to ``cli``."""
    cli.add_command(plan_command)
    cli.add_command(doctor_command)
