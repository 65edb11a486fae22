"""How much of the core one chat request touches: the files and functions it runs through, and the longest and
most complex functions of the core (issue 13's before/after measure).

    python bench/request_path.py            # this checkout
    PYTHONPATH=/path/to/other/checkout python bench/request_path.py   # another one, for comparison

One warm-up request, then one traced request per door (OpenAI and Ollama, non-streaming and streaming) against
the in-process fake backend, through the real ASGI app.
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import httpx

import autotune_core
from autotune_core.config import validate_settings
from autotune_core.host import PluginHost
from autotune_core.server import create_app
from autotune_core.testing import FakeBackendPlugin, make_hardware

CORE = Path(autotune_core.__file__).parent
BODIES = {
    "/v1/chat/completions": {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]},
    "/api/chat": {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False},
}


async def traced_files() -> dict[str, set[str]]:
    host = PluginHost(
        config=validate_settings({"backend_order": ["fake"]}, "<bench>"),
        plugins=[FakeBackendPlugin()],
        load_entrypoints=False,
        hardware=make_hardware(),
    )
    app = create_app(host, sampler=False)
    seen: dict[str, set[str]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path, body in BODIES.items():
            for stream in (False, True):
                payload = {**body, "stream": stream}
                await client.post(path, json=payload)  # warm-up: caches, lazy imports
                files: set[str] = set()

                def profile(frame, event, arg, files=files):  # type: ignore[no-untyped-def]
                    if event == "call":
                        name = frame.f_code.co_filename
                        if name.startswith(str(CORE)):
                            files.add(str(Path(name).relative_to(CORE)))

                sys.setprofile(profile)
                try:
                    await client.post(path, json=payload)
                finally:
                    sys.setprofile(None)
                seen[f"{path} stream={stream}"] = files
    return seen


def functions() -> list[tuple[int, str]]:
    out = []
    for file in sorted(CORE.rglob("*.py")):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                out.append((length, f"{file.relative_to(CORE)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    seen = asyncio.run(traced_files())
    every = set().union(*seen.values())
    for label, files in seen.items():
        print(f"{label}: {len(files)} core files")
    print(f"all four requests: {len(every)} core files: {', '.join(sorted(every))}")
    lines = sum(len(p.read_text().splitlines()) for p in CORE.rglob("*.py"))
    proper = sum(
        len(p.read_text().splitlines())
        for p in CORE.rglob("*.py")
        if not {"cli", "server", "chat", "proof"} & set(p.relative_to(CORE).parts[:-1])
    )
    print(f"core lines: {lines} (without cli/, server/, chat/, proof/: {proper})")
    for length, name in functions()[:5]:
        print(f"  longest: {length:4d} lines  {name}")


if __name__ == "__main__":
    main()
