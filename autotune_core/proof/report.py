"""The proof's reports: a rich table for the terminal, JSON (every sample), Markdown, and a PNG chart.

The chart needs matplotlib (``pip install 'autotune[proof]'``); without it the chart is skipped with a
message and everything else is written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .analysis import ArmSummary, ScenarioFindings, headline
from .runner import ProofResult, machine

ARM_ORDER = ("autotune", "plain", "direct")


def _mib(value: int | None) -> str:
    return f"{value / 2**20:.1f}" if value else "–"


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "–"


def _rate(value: float | None) -> str:
    return f"{value:.1f}" if value else "–"


def _reloads(summary: ArmSummary) -> str:
    return str(summary.reloads) if summary.reloads_known else f"{summary.reloads}?"


def _identical(summary: ArmSummary) -> str:
    if summary.identical_to_plain is None:
        return "(baseline)" if summary.arm == "plain" else "–"
    return f"{summary.identical_to_plain}/{summary.compared}"


def arm_rows(result: ProofResult, finding: ScenarioFindings) -> list[list[str]]:
    rows = []
    for name in ARM_ORDER:
        summary = finding.arms.get(name)
        if summary is None:
            continue
        totals = result.arms[name]
        rss = _mib(totals.peak_rss) + ("*" if totals.rss_shared and totals.peak_rss else "")
        rows.append(
            [
                name,
                _ms(summary.ttft_ms),
                _ms(summary.total_ms),
                _rate(summary.tokens_per_s),
                f"{summary.num_ctx or '–'} {summary.kv_type or ''}".strip(),
                _mib(summary.kv_allocated),
                _mib(summary.kv_needed),
                rss,
                _reloads(summary),
                str(summary.truncated),
                str(summary.errors),
                _identical(summary),
            ]
        )
    return rows


HEADERS = [
    "arm",
    "TTFT ms",
    "total ms",
    "tok/s",
    "ctx, KV",
    "KV alloc MiB",
    "KV used MiB",
    "peak RSS MiB",
    "reloads",
    "cut",
    "errors",
    "same text",
]
#: what the columns mean (printed under the tables)
LEGEND = (
    "medians per request; ctx = context the backend loaded; KV alloc = KV cache bytes at that context "
    "(model architecture formula), KV used = at the tokens really used; peak RSS of the model-server "
    "process (* = the arms share that process, so their peaks are not separable); cut = prompts the "
    "backend truncated; same text = identical output to the plain arm at temperature 0"
)


def print_tables(console: Console, result: ProofResult, findings: list[ScenarioFindings]) -> None:
    for finding in findings:
        if finding.skipped:
            console.print(f"[bold]{finding.title}[/]: [yellow]{finding.skipped}[/]")
            continue
        table = Table(title=finding.title, title_justify="left", show_lines=False)
        for header in HEADERS:
            table.add_column(header, justify="left" if header == "arm" else "right")
        for row in arm_rows(result, finding):
            table.add_row(*row)
        console.print(table)
        for baseline, ratios in finding.ratios.items():
            text = "; ".join(f"{r.metric} {r.text()}" for r in ratios if r.ratio is not None)
            console.print(f"  autotune / {baseline}: {text}")
        for note in finding.notes:
            console.print(f"  [dim]{note}[/]")
    console.print(f"[dim]{LEGEND}[/]")
    where = ", ".join(f"{a.name}: {a.pids_how}" for a in result.arms.values())
    swaps = ", ".join(f"{a.name} {a.swap_in}/{a.swap_out}" for a in result.arms.values())
    console.print(f"[dim]peak RSS of {where}; swap in/out (pages, system-wide): {swaps}[/]")


def to_json(result: ProofResult, findings: list[ScenarioFindings], command: str) -> dict[str, Any]:
    return {
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
        "wall_s": round(result.wall_s, 2),
        "cpu_s": round(result.cpu_s, 2),
        "load_average_start_end": list(result.load_average),
        "machine": machine(),
        "model": result.model,
        "backend": result.backend,
        "quick": result.quick,
        "runs": result.runs,
        "default_ctx": result.default_ctx,
        "shared_server": result.shared_server,
        "notes": result.notes,
        "arms": {name: vars(t) for name, t in result.arms.items()},
        "scenarios": [
            {
                "name": f.name,
                "title": f.title,
                "skipped": f.skipped,
                "notes": f.notes,
                "arms": {name: vars(s) for name, s in f.arms.items()},
                "ratios": {base: [r.as_dict() for r in rs] for base, rs in f.ratios.items()},
            }
            for f in findings
        ],
        "samples": [r.as_dict() for r in result.records],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def to_markdown(result: ProofResult, findings: list[ScenarioFindings], command: str) -> str:
    m = machine()
    lines = [
        f"### `autotune proof` on {result.model} ({result.backend})",
        "",
        f"Command: `{command}`. {m['system']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM, Python {m['python']}; "
        f"{'quick run' if result.quick else 'full run'}, {result.wall_s:.0f} s wall, {result.cpu_s:.0f} s CPU, "
        "load average "
        f"{result.load_average[0]:.1f} → {result.load_average[1]:.1f}. Default context of the plain arm: "
        f"{result.default_ctx}. "
        "Temperature 0 and a fixed seed in every arm; arms interleaved per item, rotating who goes first; "
        "ratios are autotune / baseline (geometric mean of pairs) with a 95 % bootstrap interval.",
        "",
    ]
    lines += [f"- {note}" for note in result.notes] + [""]
    for finding in findings:
        items = len({r.item for r in result.records if r.scenario == finding.name})
        lines.append(
            f"**{finding.title}**" + (f": {finding.skipped}" if finding.skipped else f" ({items} items per arm)")
        )
        lines.append("")
        if finding.skipped:
            continue
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "---|" * len(HEADERS))
        for row in arm_rows(result, finding):
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        for baseline, ratios in finding.ratios.items():
            text = "; ".join(f"{r.metric} {r.text()}" for r in ratios if r.ratio is not None)
            lines.append(f"- autotune / {baseline}: {text}")
        lines += [f"- {note}" for note in finding.notes]
        lines.append("")
    swaps = ", ".join(f"{a.name} {a.swap_in}/{a.swap_out}" for a in result.arms.values())
    lines.append(LEGEND[0].upper() + LEGEND[1:] + ".")
    lines.append("")
    lines.append(
        f"Swap in/out during the arms' blocks (pages, system-wide): {swaps}. Peak RSS of "
        + "; ".join(f"{a.name}: {a.pids_how}" for a in result.arms.values())
        + "."
    )
    lines.append("")
    lines.append("Summary: " + " · ".join(headline(findings)))
    return "\n".join(lines) + "\n"


def write_chart(path: Path, result: ProofResult, findings: list[ScenarioFindings]) -> str | None:
    """TTFT per turn (conversation) and per step (agent), and peak RSS / KV per arm. None when written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'autotune[proof]')"
    curves = [f for f in findings if f.name in ("conversation", "agent") and f.arms]
    fig, axes = plt.subplots(1, len(curves) + 1, figsize=(5 * (len(curves) + 1), 4))
    axes = list(axes) if hasattr(axes, "__iter__") else [axes]
    for ax, finding in zip(axes, curves, strict=False):
        for name in ARM_ORDER:
            summary = finding.arms.get(name)
            if summary is not None and summary.curve:
                ax.plot(list(summary.curve), list(summary.curve.values()), marker="o", label=name)
        ax.set_title(finding.title, fontsize=9)
        ax.set_xlabel("turn" if finding.name == "conversation" else "step")
        ax.set_ylabel("TTFT ms (median)")
        ax.legend()
    ax = axes[-1]
    names = [n for n in ARM_ORDER if n in result.arms]
    rss = [(result.arms[n].peak_rss or 0) / 2**20 for n in names]
    kv = [
        max((f.arms[n].kv_allocated or 0) for f in findings if n in f.arms) / 2**20
        if any(n in f.arms for f in findings)
        else 0
        for n in names
    ]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], rss, width=0.4, label="peak RSS of the model server")
    ax.bar([x + 0.2 for x in xs], kv, width=0.4, label="largest KV allocated")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("MiB")
    ax.set_title("memory per arm", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"autotune proof: {result.model} on {result.backend}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
