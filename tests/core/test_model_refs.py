"""What ``autotune pull MODEL`` accepts: Hub references, quant tags, aliases (pure parsing, no network)."""

from __future__ import annotations

import pytest

from autotune_core.errors import InvalidRequest
from autotune_core.model_refs import ALIASES, HubRef, is_hub_ref, parse_ref, pick_file, quant_of


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("gemma-3-270m-it-Q8_0.gguf", "Q8_0"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("Qwen3-0.6B-Q8_0.gguf", "Q8_0"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-3-270m-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("model-BF16.gguf", "BF16"),
        ("sub/dir/model-f16.gguf", "F16"),
        ("model.gguf", None),
    ],
)
def test_quant_of_reads_the_tag_in_a_file_name(name: str, quant: str | None) -> None:
    assert quant_of(name) == quant


def test_the_accepted_forms() -> None:
    assert parse_ref("hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0") == HubRef(
        "ggml-org/gemma-3-270m-it-GGUF", quant="Q8_0"
    )
    assert parse_ref("https://huggingface.co/Qwen/Qwen3-0.6B-GGUF") == HubRef("Qwen/Qwen3-0.6B-GGUF")
    assert parse_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF", quant="q4_k_m").quant == "Q4_K_M"
    assert parse_ref("owner/repo", file="x-Q4_0.gguf").file == "x-Q4_0.gguf"
    assert parse_ref("owner/repo:x-Q4_0.gguf").file == "x-Q4_0.gguf"
    assert parse_ref("hf.co/owner/repo:latest") == HubRef("owner/repo")
    alias = parse_ref("Gemma3-270M-IT")
    assert (alias.repo, alias.file, alias.alias) == (
        ALIASES["gemma3-270m-it"].repo,
        ALIASES["gemma3-270m-it"].file,
        "gemma3-270m-it",
    )


def test_ollama_names_and_hub_names_are_told_apart() -> None:
    assert not is_hub_ref("llama3.2:1b")
    assert not is_hub_ref("qwen3")
    assert is_hub_ref("owner/repo") and is_hub_ref("hf.co/owner/repo:Q4_K_M") and is_hub_ref("qwen3-0.6b")
    assert parse_ref("qwen2.5-0.5b-instruct").ollama_name == "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert parse_ref("owner/repo", quant="Q8_0").ollama_name == "hf.co/owner/repo:Q8_0"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("not a repo",), "cannot read"),
        (("owner/repo:Q8_0",), None),
        (("owner/repo",), None),
    ],
)
def test_bad_forms_say_what_is_accepted(args: tuple[str], fragment: str | None) -> None:
    if fragment is None:
        parse_ref(*args)
        return
    with pytest.raises(InvalidRequest, match=fragment) as info:
        parse_ref(*args)
    assert "hf.co/OWNER/REPO:QUANT" in info.value.message


def test_conflicting_options_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        parse_ref("owner/repo", file="a.gguf", quant="Q8_0")
    with pytest.raises(InvalidRequest, match="already names"):
        parse_ref("owner/repo:Q8_0", quant="Q4_K_M")
    with pytest.raises(InvalidRequest, match=r"\.gguf"):
        parse_ref("owner/repo", file="README.md")
    with pytest.raises(InvalidRequest, match="alias"):
        parse_ref("qwen3-0.6b", quant="Q4_K_M")


FILES = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-F16.gguf", "mmproj-m-F16.gguf"]


def test_pick_file_by_quant_and_default() -> None:
    assert pick_file(HubRef("o/r"), FILES) == "m-Q4_K_M.gguf"  # Ollama's default
    assert pick_file(HubRef("o/r"), [f for f in FILES if "Q4_K_M" not in f]) == "m-Q8_0.gguf"
    assert pick_file(HubRef("o/r", quant="F16"), FILES) == "m-F16.gguf"  # the projector is never picked
    assert pick_file(HubRef("o/r"), ["only.gguf"]) == "only.gguf"
    assert pick_file(HubRef("o/r", file="m-Q8_0.gguf"), FILES) == "m-Q8_0.gguf"


def test_pick_file_explains_what_is_there() -> None:
    with pytest.raises(InvalidRequest, match=r"no Q2_K file; quants there: F16, Q4_K_M, Q8_0"):
        pick_file(HubRef("o/r", quant="Q2_K"), FILES)
    with pytest.raises(InvalidRequest, match=r"no file 'x\.gguf'"):
        pick_file(HubRef("o/r", file="x.gguf"), FILES)
    with pytest.raises(InvalidRequest, match="no GGUF"):
        pick_file(HubRef("o/r"), ["model.safetensors"])
    with pytest.raises(InvalidRequest, match="split GGUFs"):
        pick_file(HubRef("o/r", quant="Q8_0"), ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"])
    with pytest.raises(InvalidRequest, match="none is Q4_K_M or Q8_0"):
        pick_file(HubRef("o/r"), ["m-Q2_K.gguf", "m-Q3_K_M.gguf"])
