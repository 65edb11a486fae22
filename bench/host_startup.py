"""Core start-up cost: building a PluginHost (entry-point discovery + every installed plugin) and
``autotune plugins list`` end to end. Target: host construction ≤ 300 ms.

Arms, interleaved round by round so machine noise hits them alike:

- ``python -c pass``: the interpreter alone (the floor every command pays);
- cold host: a fresh process imports autotune_core and builds ``PluginHost()``; we report the time from
  before the import to the built host (imports of the core and of every plugin included), and the
  host's own ``startup_ms`` (registration, validation, register_* hooks, without the core's imports);
- ``autotune --version`` and ``autotune plugins list`` / ``--json``: whole commands, wall time.

Then the warm arm: ``PluginHost()`` built repeatedly in this process (modules already imported).

    python bench/host_startup.py [-n 15] [--write]

``--write`` replaces the "Core: host start-up" section of docs/benchmarks.md with the figures.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Core: host start-up"
TARGET_MS = 300.0

COLD = """
import time
t0 = time.perf_counter()
from autotune_core.host import PluginHost
t1 = time.perf_counter()
host = PluginHost()
t2 = time.perf_counter()
import json
print(json.dumps({"import_ms": (t1 - t0) * 1000, "total_ms": (t2 - t0) * 1000, "startup_ms": host.startup_ms,
                  "plugins": len(host.records), "loaded": sum(r.enabled for r in host.records.values())}))
"""


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    took = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return took, done.stdout


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="rounds (fresh processes per arm)")
    parser.add_argument("--warm", type=int, default=50, help="in-process constructions")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="autotune-bench-")
    atexit.register(shutil.rmtree, tmp, True)  # the scratch home goes with the run
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_")}
    env.update(
        {
            "AUTOTUNE_CONFIG": str(Path(tmp) / "config.toml"),
            "AUTOTUNE_DATA_DIR": str(Path(tmp) / "data"),
            "PYTHONDONTWRITEBYTECODE": "0",
        }
    )
    os.environ.update({"AUTOTUNE_CONFIG": env["AUTOTUNE_CONFIG"], "AUTOTUNE_DATA_DIR": env["AUTOTUNE_DATA_DIR"]})
    for var in [k for k in os.environ if k.startswith("AUTOTUNE_") and k not in env]:
        del os.environ[var]

    script = Path(sys.executable).parent / "autotune"  # the installed console script, not a shell shim
    fallback = [sys.executable, "-c", "from autotune_core.cli import main; main()"]
    autotune = [str(script)] if script.exists() else fallback
    arms: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "autotune --version": [*autotune, "--version"],
        "autotune plugins list": [*autotune, "plugins", "list"],
        "autotune plugins list --json": [*autotune, "plugins", "list", "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    cold: dict[str, list[float]] = {"total_ms": [], "import_ms": [], "startup_ms": []}
    counts = {}
    for cmd in [*arms.values(), [sys.executable, "-c", COLD]]:  # warm the page cache and bytecode once
        wall(cmd, env)
    for _ in range(args.n):
        for name, cmd in arms.items():
            times[name].append(wall(cmd, env)[0])
        _, out = wall([sys.executable, "-c", COLD], env)
        data = json.loads(out.strip().splitlines()[-1])
        for key in cold:
            cold[key].append(data[key])
        counts = {"plugins": data["plugins"], "loaded": data["loaded"]}

    import logging

    logging.disable(logging.CRITICAL)  # broken plugins would log on every construction
    from autotune_core.host import PluginHost

    PluginHost()
    warm = []
    for _ in range(args.warm):
        started = time.perf_counter()
        PluginHost()
        warm.append((time.perf_counter() - started) * 1000)

    rows = [
        ("cold: import autotune_core + PluginHost() (in a fresh process)", summary(cold["total_ms"])),
        ("cold: of which PluginHost() itself (startup_ms)", summary(cold["startup_ms"])),
        ("warm: PluginHost() in-process, modules imported", summary(warm)),
        *[(f"wall: {name}", summary(values)) for name, values in times.items()],
    ]
    verdict = "meets" if summary(cold["total_ms"])["median"] <= TARGET_MS else "MISSES"
    lines = [
        f"Host with {counts['plugins']} plugins known ({counts['loaded']} loaded); {args.n} fresh-process rounds, "
        f"{args.warm} warm constructions; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs.",
        "",
        "| measurement | median ms | p90 ms | min ms | max ms |",
        "|---|---|---|---|---|",
        *[f"| {label} | {s['median']:.1f} | {s['p90']:.1f} | {s['min']:.1f} | {s['max']:.1f} |" for label, s in rows],
        "",
        f"Target: host construction ≤ {TARGET_MS:.0f} ms in a fresh process (imports included): {verdict} it "
        f"(median {summary(cold['total_ms'])['median']:.1f} ms).",
    ]
    print("\n".join(lines))
    if args.write:
        write_section(lines)


def write_section(lines: list[str]) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = "\n".join(
        [
            SECTION,
            "",
            "How long the plugin host takes to come up: entry-point discovery, importing and registering every",
            "installed plugin, validating their settings and running the `register_*` hooks, and the",
            "`autotune plugins list` command end to end. Reproduce with:",
            "",
            "```bash",
            "python bench/host_startup.py -n 15 --write",
            "```",
            "",
            *lines,
            "",
        ]
    )
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    path.write_text(text)
    print(f"\nwrote the section to {path}")


if __name__ == "__main__":
    main()
