"""CI installs exactly what the README's quickstart tells a new user to run (issue 14: the README's command
built a native llama.cpp that crashed on the VM; CI passed only because it set CMAKE_ARGS on its own)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_install() -> str:
    block = re.search(r"## Quickstart.*?```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None, "README.md needs a Quickstart with a bash block"
    command = block.group(1).strip()
    install, _, then = command.partition(" && ")
    assert then == "autotune serve", command
    return install


def test_the_quickstart_builds_a_portable_llama_cpp() -> None:
    assert readme_install() == 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -e ".[embedded,dev]"'


def test_ci_runs_the_same_install() -> None:
    lines = [line.strip().replace(" -q ", " ") for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    installs = [line for line in lines if "pip install" in line and "[embedded" in line]
    assert installs == [readme_install()], installs
    assert not any(line.startswith("export CMAKE_ARGS") for line in lines), "CI must not add build flags of its own"
