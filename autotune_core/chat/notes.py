"""One-line notes for the chat status line: what a plugin did to this answer, in plain words.

Read from the Plan (in-process) or from the ``X-Autotune-*`` headers (``--url``). Only actions a user
would want to know about are reported (pressure, compression, recall, reloads, a guard lowering a value,
a truncation); routine sizing is the status line itself.
"""

from __future__ import annotations

from typing import Any

from ..plan import Plan

#: plugins whose num_ctx / kv_type changes are protective (a guard acted), not routine sizing
GUARDS = frozenset({"noswap-guard", "live-pressure", "model-fit", "session-advisor"})


def _short(text: str, width: int = 110) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def plan_notes(plan: Plan, *, reloaded: bool = False, load_ms: float | None = None) -> list[str]:
    """Notes from a plan after the answer (post_response has run, so its flags are in)."""
    notes: list[str] = []
    for warning in getattr(plan, "warnings", None) or []:  # issue 12: a guard lowered a client value
        notes.append(_short(f"warning: {warning}"))
    for entry in plan.trace:
        if (
            entry.plugin in GUARDS
            and entry.knob in ("num_ctx", "kv_type")
            and entry.old is not None
            and entry.new != entry.old
        ):
            notes.append(_short(f"{entry.plugin}: {entry.knob} {entry.old} → {entry.new} ({entry.reason})"))
        elif entry.knob == "messages" and entry.old != entry.new:
            notes.append(_short(f"{entry.plugin}: {entry.reason}"))
        elif entry.knob == "fit" and entry.new not in (None, "SAFE"):
            notes.append(_short(f"model-fit: {entry.new}"))
    compression = plan.flags.get("compression")
    if isinstance(compression, dict) and compression.get("saved_tokens"):
        notes.append(f"context-compressor: tier {compression.get('tier')}, saved ~{compression['saved_tokens']} tokens")
    if plan.flags.get("ctx_resize"):
        notes.append(f"context resized {plan.flags['ctx_resize']}")
    truncated = plan.flags.get("truncated")
    if truncated:
        detail = (
            truncated
            if not isinstance(truncated, dict)
            else f"backend saw {truncated.get('reported')} of ~{truncated.get('expected')} prompt tokens"
        )
        notes.append(f"truncated: {detail}")
    capped = plan.flags.get("output_capped")
    if isinstance(capped, dict):
        notes.append(f"output capped to {capped.get('room')} tokens (asked {capped.get('requested')})")
    if reloaded:
        notes.append("model reloaded" + (f" ({load_ms:.0f} ms)" if load_ms else ""))
    return _dedupe(notes)


def header_notes(headers: dict[str, str]) -> list[str]:
    """Notes from a server's response headers (``--url``)."""
    notes = [
        _short(f"warning: {value}") for name, value in headers.items() if name.lower() == "x-autotune-warning" and value
    ]
    trace = parse_compact(headers.get("x-autotune-plan", ""))
    messages = trace.get("messages")
    if messages:
        notes.append("messages changed by " + ", ".join(plugin for plugin, _ in messages))
    for knob in ("num_ctx", "kv_type"):
        for plugin, value in trace.get(knob, []):
            if plugin in GUARDS:
                notes.append(f"{plugin}: {knob} → {value}")
    return _dedupe(notes)


def parse_compact(text: str) -> dict[str, list[tuple[str, str]]]:
    """``num_ctx=ctx-sizing>1536,ctx-buckets>2048;kv_type=...`` → {knob: [(plugin, value), ...]}."""
    out: dict[str, list[tuple[str, str]]] = {}
    for part in text.split(";"):
        knob, sep, chain = part.partition("=")
        if not sep:
            continue
        steps = []
        for step in chain.split(","):
            plugin, arrow, value = step.partition(">")
            if arrow:
                steps.append((plugin.strip(), value.strip()))
        if steps:
            out[knob.strip()] = steps
    return out


def final_value(trace: dict[str, list[tuple[str, str]]], knob: str) -> Any:
    steps = trace.get(knob)
    if not steps:
        return None
    value = steps[-1][1]
    return None if value in ("None", "") else value


def _dedupe(notes: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for note in notes:
        if note not in seen:
            seen.add(note)
            out.append(note)
    return out
