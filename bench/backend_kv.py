"""Embedded backend (Gemma 3 270M): reload cost, KV bytes (formula vs llama.cpp's allocation) and the worker's RSS.

Each (n_ctx, kv_type) is measured in a fresh subprocess so resident memory is not polluted by earlier loads.
Run: ``python bench/backend_kv.py`` (add ``--markdown`` for the docs table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

CTXS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
KV_TYPES = ("f16", "q8_0")


async def _one(n_ctx: int, kv_type: str) -> dict[str, object]:
    import psutil

    from autotune_core.messages import ChatRequest, Message
    from autotune_core.plan import Plan
    from autotune_plugins.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend({"keep_alive": -1})
    request = ChatRequest(
        model="gemma3:270m", messages=[Message(role="user", content="Hi")], max_tokens=1, temperature=0
    )
    rss_before = psutil.Process().memory_info().rss
    # first load at a small context, then the measured config: its load is a reload (what a tuner pays)
    await backend.chat(request, Plan(model="gemma3:270m", num_ctx=256, kv_type="f16"))
    plan = Plan(model="gemma3:270m", num_ctx=n_ctx, kv_type=kv_type)
    started = time.perf_counter()
    result = await backend.chat(request, plan)
    wall_ms = (time.perf_counter() - started) * 1000
    loaded = backend.engine.loaded
    assert loaded is not None and result.timings.reloaded
    out = {
        "n_ctx": n_ctx,
        "kv_type": kv_type,
        "flash_attn": loaded.params.flash_attn,
        "reload_ms": round(result.timings.load_ms or 0.0, 1),
        "request_wall_ms": round(wall_ms, 1),
        "kv_formula": backend.kv_bytes(loaded.info, loaded.params),
        "kv_measured": loaded.kv_bytes_measured,
        # the model lives in the worker process: its RSS, not this (server) process's
        "rss_mib": round((await backend.engine.call("stats"))["rss_bytes"] / 2**20, 1),
        "rss_before_mib": round(rss_before / 2**20, 1),
    }
    await backend.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", nargs=2, metavar=("N_CTX", "KV"), help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_one(int(args.one[0]), args.one[1]))))
        return
    rows = []
    for kv in KV_TYPES:
        for n_ctx in CTXS:
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(n_ctx), kv],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    header = ("n_ctx", "kv", "FA", "reload ms", "KV formula MiB", "KV llama.cpp MiB", "RSS MiB")
    lines = []
    for r in rows:
        measured = r["kv_measured"]
        lines.append(
            (
                r["n_ctx"],
                r["kv_type"],
                "on" if r["flash_attn"] else "off",
                r["reload_ms"],
                f"{r['kv_formula'] / 2**20:.2f}",
                f"{measured / 2**20:.2f}" if isinstance(measured, int) else "n/a",
                r["rss_mib"],
            )
        )
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(str(c) for c in line) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
        for line in (header, *lines):
            print("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
