"""``autotune proof``: does autotune help on this machine? Measured against itself with optimizations off."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path
from types import TracebackType

import click

from ..errors import AutotuneError

SCENARIOS = ("short", "conversation", "document", "agent")


class _Bar:
    """A rich progress bar fed by the runner (on stderr, so a --json to stdout stays clean)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=None)
        #: not a terminal (a CI log): one line per phase instead of a bar
        self.lines = not console.is_terminal
        self.phase = ""
        self.done = 0
        self.steps: int | None = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def total(self, steps: int) -> None:
        self.steps = steps
        self.progress.update(self.task, total=steps)

    def step(self, text: str, advance: int = 1) -> None:
        self.done += advance
        self.progress.update(self.task, description=text[:44], advance=advance)
        phase = text.split(" · ")[0].split(":")[0]
        if self.lines and phase != self.phase:
            self.phase = phase
            click.echo(f"proof: {phase} ({self.done}/{self.steps or '?'} timed requests done)", err=True)


def register(cli: click.Group) -> None:
    """Adds ``proof`` to ``cli``."""

    @cli.command("proof")
    @click.option("--model", "-m", default=None, help="Model (default: a running backend's best, else embedded).")
    @click.option("--backend", "-b", default=None, help="Use this backend only (ollama, openai, llamacpp, ...).")
    @click.option("--quick", is_flag=True, help="A small run (about a minute on the embedded model).")
    @click.option(
        "--runs",
        type=click.IntRange(1, 100),
        default=None,
        help="Pairs per scenario (default 6; quick: 1–3). Short chats use at least 12 in a full run.",
    )
    @click.option(
        "--scenario",
        "scenarios",
        multiple=True,
        type=click.Choice(SCENARIOS),
        help="Only these scenarios (repeatable).",
    )
    @click.option("--no-direct", is_flag=True, help="Skip the backend-direct arm.")
    @click.option(
        "--json",
        "json_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write every sample and the findings as JSON.",
    )
    @click.option(
        "--markdown",
        "md_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write the tables as Markdown.",
    )
    @click.option(
        "--chart",
        "chart_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write a PNG chart (needs matplotlib: pip install 'autotune[proof]').",
    )
    def proof_command(
        model: str | None,
        backend: str | None,
        quick: bool,
        runs: int | None,
        scenarios: tuple[str, ...],
        no_direct: bool,
        json_path: Path | None,
        md_path: Path | None,
        chart_path: Path | None,
    ) -> None:
        """Default stack vs autotune with every optimization off (and vs the server direct): paired, interleaved,
        warmed alike, with 95 % confidence intervals. A difference inside the noise is reported as none."""
        import os

        from rich.console import Console

        from ..proof.analysis import analyse, headline
        from ..proof.report import print_tables, to_json, to_markdown, write_chart, write_json
        from ..proof.runner import ProofConfig, run_proof

        config = ProofConfig(
            model=model,
            backend=backend,
            quick=quick,
            runs=runs,
            direct=not no_direct,
            env=dict(os.environ),
            only=list(scenarios) or None,
        )
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # a file or a pipe: do not squeeze the tables to 80 columns
        try:
            with _Bar() as bar:
                result = asyncio.run(run_proof(config, bar))
        except AutotuneError as exc:
            raise click.ClickException(exc.message) from None
        findings = analyse(result)
        command = "autotune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        print_tables(console, result, findings)
        console.print()
        for line in headline(findings):
            console.print(f"[bold]•[/] {line}")
        console.print(
            f"[dim]{result.model} on {result.backend}: {result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU, "
            f"load average {result.load_average[0]:.1f} → {result.load_average[1]:.1f}[/]"
        )
        if json_path is not None:
            write_json(json_path, to_json(result, findings, command))
            console.print(f"JSON: {json_path}")
        if md_path is not None:
            md_path.write_text(to_markdown(result, findings, command), encoding="utf-8")
            console.print(f"Markdown: {md_path}")
        if chart_path is not None:
            skipped = write_chart(chart_path, result, findings)
            console.print(skipped or f"chart: {chart_path}")
