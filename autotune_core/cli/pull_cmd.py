"""``autotune pull MODEL``: fetch a GGUF from Hugging Face into the pull cache, or have Ollama pull a model.

Which way: ``--backend ollama`` (or a configured ``backend = "ollama"``, or a name that is not a Hugging Face
reference, like ``llama3.2:1b``) goes through Ollama's ``/api/pull``; everything else (and everything with a
configured ``backend = "llamacpp"``) downloads the GGUF for the embedded llamacpp backend, which serves it
at once under ``hf.co/OWNER/REPO:QUANT``.
Both draw the same progress bar from :class:`~autotune_core.pull_progress.PullEvent`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import AutotuneError
from ..pull_progress import PullEvent
from .common import echo_json, get_host, run

BACKENDS = ("auto", "llamacpp", "ollama")


class ProgressView:
    """One rich progress bar per file/layer (keyed by digest), status lines printed above them."""

    def __init__(self, *, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True, quiet=quiet)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.last_status: str | None = None

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: PullEvent) -> None:
        if event.digest and event.total:
            task = self.tasks.get(event.digest)
            if task is None:
                short = event.digest.split(":", 1)[-1][:12]
                label = event.status if event.status.startswith("pulling ") else f"pulling {short}"
                task = self.progress.add_task(label, total=event.total)
                self.tasks[event.digest] = task
            self.progress.update(task, total=event.total, completed=event.completed or 0)
            return
        if event.status != self.last_status:
            self.last_status = event.status
            self.progress.console.print(event.status)


async def _ollama_pull(name: str, view: ProgressView) -> None:
    from ..pull_progress import Pullable

    host = get_host()
    if "ollama" not in host.backend_classes:
        raise click.ClickException("the ollama backend is not installed or is disabled")
    backend = host.backend("ollama")
    if not isinstance(backend, Pullable):
        raise click.ClickException(f"the {backend.name} backend cannot pull models")
    try:
        last: PullEvent | None = None
        async for event in backend.pull(name):
            view(event)
            last = event
        if last is None or last.status != "success":
            raise click.ClickException(f"Ollama ended the pull of {name} without success")
    except AutotuneError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        await backend.aclose()


def register(cli: click.Group) -> None:
    """Adds ``pull`` to ``cli``."""

    @cli.command("pull")
    @click.argument("model")
    @click.option("--file", "file", metavar="NAME.gguf", help="the GGUF file of the repository to fetch")
    @click.option("--quant", metavar="QUANT", help="pick the repository's file of this quant (e.g. Q4_K_M)")
    @click.option("--revision", metavar="REV", help="branch, tag or commit on the Hub (default: main)")
    @click.option(
        "--backend",
        "target",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        help="llamacpp: download the GGUF for the embedded engine; ollama: Ollama's /api/pull",
    )
    @click.option(
        "--endpoint",
        metavar="URL",
        default=None,
        help="the Hub's address (default: $HF_ENDPOINT, else https://huggingface.co)",
    )
    @click.option("--json", "as_json", is_flag=True, help="print the result as JSON (progress stays on stderr)")
    @click.option("--quiet", "-q", is_flag=True, help="no progress output")
    def pull_command(
        model: str,
        file: str | None,
        quant: str | None,
        revision: str | None,
        target: str,
        endpoint: str | None,
        as_json: bool,
        quiet: bool,
    ) -> None:
        """Fetch MODEL so a backend can serve it: a GGUF from Hugging Face (resumable, checksum-verified) or,
        for Ollama, through its /api/pull.

        \b
        MODEL forms:
          hf.co/OWNER/REPO:QUANT        e.g. hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0
          OWNER/REPO --quant Q4_K_M     or --file NAME.gguf
          gemma3-270m-it, qwen2.5-0.5b-instruct, qwen3-0.6b   (small instruct models)
          NAME:TAG                      an Ollama library name (goes to Ollama)
        """
        from ..model_refs import is_hub_ref, parse_ref

        if target == "auto":
            forced = get_host().config.backend
            guessed = "llamacpp" if is_hub_ref(model) else "ollama"
            target = forced if forced in ("ollama", "llamacpp") else guessed
        if target == "ollama":
            if revision:
                raise click.UsageError("--revision applies to Hugging Face downloads only")
            if is_hub_ref(model):  # Ollama pulls Hub GGUFs itself, named hf.co/OWNER/REPO:QUANT
                try:
                    name = parse_ref(model, file=file, quant=quant).ollama_name
                except AutotuneError as exc:
                    raise click.UsageError(exc.message) from None
            elif file or quant:
                raise click.UsageError("--file and --quant apply to Hugging Face references only")
            else:
                name = model
            with ProgressView(quiet=quiet) as view:
                run(_ollama_pull(name, view))
            if as_json:
                echo_json({"backend": "ollama", "model": name, "status": "success"})
            else:
                click.echo(f"pulled {name} into Ollama")
            return
        _hub_pull(model, file=file, quant=quant, revision=revision, endpoint=endpoint, as_json=as_json, quiet=quiet)


def _hub_pull(
    model: str,
    *,
    file: str | None,
    quant: str | None,
    revision: str | None,
    endpoint: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    from ..hub import pull_dir, pull_gguf
    from ..model_refs import parse_ref

    try:
        ref = parse_ref(model, file=file, quant=quant, revision=revision)
    except AutotuneError as exc:
        raise click.UsageError(exc.message) from None
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        with ProgressView(quiet=quiet) as view:
            manifest = pull_gguf(ref, endpoint=endpoint, on_event=view)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; run the same pull again to resume") from None
    except AutotuneError as exc:
        raise click.ClickException(exc.message) from None
    path = pull_dir() / manifest.repo / manifest.file
    if as_json:
        echo_json({"backend": "llamacpp", **manifest.model_dump(), "path": str(path)})
        return
    names = ", ".join(n for n in (manifest.alias, manifest.name.removeprefix("hf.co/")) if n)
    click.echo(f"pulled {manifest.repo}/{manifest.file} ({manifest.size / 2**20:.0f} MiB, {manifest.digest})")
    click.echo(f"serve it as {manifest.name} (also: {names}) on the llamacpp backend")
