"""The ``autotune`` command. Each command group lives in its own module; plugins add more through
the ``register_commands`` hook. Heavy imports (server, backends) happen inside the commands.
"""

from __future__ import annotations

import sys
from importlib import import_module

import click

from .. import __version__
from ..errors import AutotuneError

#: core command modules, each exposing ``register(cli)``
CORE_COMMANDS = (
    "plugins_cmd",
    "config_cmd",
    "hardware_cmd",
    "backends_cmd",
    "plan_cmd",
    "serve_cmd",
    "pull_cmd",
    "chat_cmd",
    "proof_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="autotune")
def cli() -> None:
    """autotune: tunes every request to your local LLM server."""


def _build() -> click.Group:
    for module in CORE_COMMANDS:
        import_module(f"{__name__}.{module}").register(cli)
    if sys.argv[1:] == ["--version"]:
        return cli
    try:
        from .common import get_host

        get_host().hooks.register_commands(cli=cli)
    except AutotuneError as exc:
        click.echo(f"warning: plugin commands unavailable: {exc}", err=True)
    return cli


def main() -> None:
    group = _build()
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AutotuneError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
