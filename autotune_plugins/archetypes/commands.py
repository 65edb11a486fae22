"""CLI: ``autotune profiles list | show ID | update | merge | learn | lemonade`` and ``autotune bench``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from autotune_core.archetypes import ProfileSetError, classify, dump_profile_set, profile_sets
from autotune_core.cli.common import echo_json, get_host, table

from .cache import ProfileCache, archetypes_config, atomic_write
from .lemonade import to_lemonade
from .submission import Contribution


def _sets() -> list[tuple[str, Any]]:
    sets, errors = profile_sets(get_host().archetype_sets)
    for error in errors:
        click.echo(f"warning: {error}", err=True)
    return list(sets)


@click.group("profiles")
def profiles() -> None:
    """Hardware-archetype profiles: list, show, update from the configured URL, merge, learn."""


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every profile of every registered set; * marks those that match this machine."""
    archetype = classify(get_host().hardware)
    rows = []
    for plugin, s in _sets():
        for pid, p in s.profiles.items():
            from fnmatch import fnmatchcase

            hit = pid in archetype.lookup_keys() or any(fnmatchcase(archetype.id, g) for g in p.matches)
            rows.append(
                {
                    "match": hit,
                    "id": pid,
                    "set": s.name,
                    "version": s.version,
                    "priority": s.priority,
                    "plugin": plugin,
                    "label": p.label,
                    "matches": p.matches,
                }
            )
    if as_json:
        echo_json({"archetype": archetype.id, "profiles": rows})
        return
    click.echo(f"this machine: {archetype.id}\n")
    click.echo(
        table(
            ["", "Profile", "Set", "Ver", "Prio", "Label", "Also matches"],
            [
                (
                    "*" if r["match"] else "",
                    r["id"],
                    r["set"],
                    r["version"],
                    r["priority"],
                    r["label"],
                    ", ".join(r["matches"]),
                )
                for r in rows
            ],
        )
    )


@profiles.command("show")
@click.argument("profile_id")
@click.option("--lemonade", is_flag=True, help="Show it in the Lemonade Auto-Tune shape.")
def show_cmd(profile_id: str, lemonade: bool) -> None:
    """A profile as each registered set defines it (with every value's source)."""
    found = []
    for plugin, s in _sets():
        if profile_id in s.profiles:
            subset = s.model_copy(update={"profiles": {profile_id: s.profiles[profile_id]}})
            body = to_lemonade(subset) if lemonade else dump_profile_set(subset)["profiles"][profile_id]
            found.append({"set": s.name, "version": s.version, "plugin": plugin, "profile": body})
    if not found:
        raise click.ClickException(f"no profile {profile_id!r}; see `autotune profiles list`")
    echo_json(found)


@profiles.command("update")
@click.option("--url", default=None, help="Override [archetypes] url for this run.")
def update_cmd(url: str | None) -> None:
    """Download the profile set from the configured URL; a bad or older download keeps the cache."""
    cfg = archetypes_config(get_host().config.archetypes)
    target = url or cfg.url
    if not target:
        raise click.ClickException("no URL: set `[archetypes] url = ...` in the config or pass --url")
    result = ProfileCache().refresh(target, timeout=cfg.timeout)
    click.echo(result.message)
    if result.status in ("rejected", "offline"):
        sys.exit(1)


@profiles.command("merge")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--archetype", default=None, help="Merge only this archetype (default: the majority).")
@click.option("--backend", default=None, help="Merge only this backend (default: the majority).")
@click.option("--min-submissions", default=1, show_default=True, type=click.IntRange(1))
@click.option("--name", default="community", show_default=True)
@click.option("--version", "set_version", default=1, show_default=True, type=click.IntRange(1))
def merge_cmd(
    files: tuple[Path, ...],
    output: Path | None,
    archetype: str | None,
    backend: str | None,
    min_submissions: int,
    name: str,
    set_version: int,
) -> None:
    """Curate bench contributions into a profile (outliers and conflicting submissions rejected)."""
    from .merge import load_contributions, merge

    good, bad = load_contributions(files)
    try:
        report = merge(
            good,
            archetype=archetype,
            backend=backend,
            min_submissions=min_submissions,
            name=name,
            version=set_version,
            rejected=bad,
        )
    except ValueError as exc:
        for where, why in bad:
            click.echo(f"rejected {where}: {why}", err=True)
        raise click.ClickException(str(exc)) from None
    for where, why in report.rejected:
        click.echo(f"rejected {where}: {why}", err=True)
    for scenario, stats in report.best.items():
        click.echo(
            f"{report.archetype}/{report.backend} {scenario}: {stats.params} -> {stats.tokens_per_s:.1f} tok/s "
            f"({len(stats.submissions)} submissions, agreement {report.agreement[scenario]:.0%})",
            err=True,
        )
    text = json.dumps(dump_profile_set(report.profile_set), indent=2)
    if output is None:
        click.echo(text)
    else:
        atomic_write(output, text + "\n")
        click.echo(f"wrote {output}", err=True)


def _learn(contribution: Contribution, *, yes: bool, as_default: bool) -> None:
    from .learn import learn, learned_values

    section, values, summary = learned_values(contribution)
    where = "archetype defaults" if as_default else f"model overlay {contribution.model!r}"
    click.echo(f"best on {contribution.archetype} ({contribution.backend}): {summary}")
    if not values:
        click.echo("nothing to save: the backend honoured none of the swept knobs")
        return
    if not yes and not click.confirm(
        f"save {sorted(values)} to the local overlay ({section}, {where})?", default=False
    ):
        return
    store = ProfileCache()
    learned = learn(contribution, store, as_default=as_default)
    click.echo(f"saved to {store.local_path} (local overlay v{learned.version})")


@profiles.command("learn")
@click.argument("bench_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Save without asking.")
@click.option("--as-default", is_flag=True, help="Save as archetype defaults instead of a model overlay.")
def learn_cmd(bench_file: Path, yes: bool, as_default: bool) -> None:
    """Save the best parameters of a bench run as a local overlay (highest priority)."""
    from .merge import load_contributions

    good, bad = load_contributions([bench_file])
    if bad or len(good) != 1:
        raise click.ClickException(bad[0][1] if bad else "expected exactly one contribution")
    _learn(good[0], yes=yes, as_default=as_default)


@profiles.command("lemonade")
@click.option(
    "--import",
    "import_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Convert a Lemonade profile JSON to our schema instead.",
)
def lemonade_cmd(import_file: Path | None) -> None:
    """Export every registered set in the Lemonade Auto-Tune shape (or --import one)."""
    from .lemonade import from_lemonade

    if import_file is not None:
        try:
            echo_json(dump_profile_set(from_lemonade(json.loads(import_file.read_text(encoding="utf-8")))))
        except (ProfileSetError, json.JSONDecodeError) as exc:
            raise click.ClickException(str(exc)) from None
        return
    echo_json({s.name: to_lemonade(s) for _plugin, s in _sets()})


@click.command("bench")
@click.option(
    "--submit-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Write the structured contribution here.",
)
@click.option("--backend", "backend_name", default="llamacpp", show_default=True)
@click.option("--model", default=None, help="Model name (default: the backend's first model).")
@click.option("--budget", default=60.0, show_default=True, type=click.FloatRange(1, 900), help="Seconds, in total.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1, 5))
@click.option("--max-tokens", default=8, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--learn/--no-learn",
    "learn_flag",
    default=None,
    help="Save the best as a local overlay (default: ask when interactive).",
)
def bench_cmd(
    submit_file: Path,
    backend_name: str,
    model: str | None,
    budget: float,
    repeats: int,
    max_tokens: int,
    learn_flag: bool | None,
) -> None:
    """Run a short parameter sweep on this machine and write a benchmark contribution."""
    from .bench import run_bench

    host = get_host()

    async def go() -> Contribution:
        try:
            return await run_bench(
                host,
                backend_name=backend_name,
                model=model,
                budget_s=budget,
                repeats=repeats,
                max_tokens=max_tokens,
                progress=lambda line: click.echo(line, err=True),
            )
        finally:
            await host.stop()

    try:
        contribution = asyncio.run(go())
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    atomic_write(submit_file, contribution.model_dump_json(indent=2) + "\n")
    click.echo(f"wrote {submit_file} ({len(contribution.runs)} runs, archetype {contribution.archetype})")
    if learn_flag is None and not sys.stdin.isatty():
        return
    if learn_flag is not False:
        _learn(contribution, yes=bool(learn_flag), as_default=False)


def add_commands(cli: click.Group) -> None:
    """``profiles`` always; ``bench`` at the top level unless another plugin owns that name."""
    cli.add_command(profiles)
    profiles.add_command(bench_cmd, "bench")
    if "bench" not in cli.commands:
        cli.add_command(bench_cmd)
