"""The profile schema: JSON and TOML, errors that name the field, provenance, Lemonade round trip."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase

import pytest
from archetype_helpers import profile_set

from autotune_core.archetypes import (
    SECTIONS,
    ProfileSetError,
    dump_profile_set,
    load_profile_set,
)
from autotune_plugins.archetypes.bundled import bundled_set
from autotune_plugins.archetypes.lemonade import from_lemonade, parse_llamacpp_args, to_lemonade

TOML = """
schema_version = 1
name = "t"
version = 2
source = "set-level source"
[profiles.nvidia-ada-24gb]
source = "profile-level source"
llamacpp.batch_size = 2048
llamacpp.ubatch_size = { value = 1024, source = "measured" }
[[profiles.nvidia-ada-24gb.overlays]]
model = "qwen3*"
embedded.n_batch = 256
"""


def test_toml_and_json_load_to_the_same_set_and_sources_are_inherited() -> None:
    from_toml = load_profile_set(TOML, origin="t.toml")
    from_json = load_profile_set(json.dumps(dump_profile_set(from_toml)), origin="t.json")
    assert from_toml == from_json
    llama = from_toml.profiles["nvidia-ada-24gb"].llamacpp
    assert llama is not None and llama.batch_size is not None and llama.ubatch_size is not None
    assert (llama.batch_size.source, llama.ubatch_size.source) == ("profile-level source", "measured")
    overlay = from_toml.profiles["nvidia-ada-24gb"].overlays[0]
    assert overlay.embedded is not None and overlay.embedded.n_batch is not None
    assert overlay.embedded.n_batch.source == "profile-level source"


@pytest.mark.parametrize(
    ("profile", "field", "message"),
    [
        ({"llamacpp": {"batch_size": 0}}, "profiles.p.llamacpp.batch_size", "greater than or equal to 1"),
        ({"llamacpp": {"cache_type_k": "q3_weird"}}, "profiles.p.llamacpp.cache_type_k", "Input should be"),
        ({"ollama": {"num_ctx": "big"}}, "profiles.p.ollama.num_ctx", "valid integer"),
        ({"vllm": {"gpu_memory_utilization": 1.5}}, "profiles.p.vllm.gpu_memory_utilization", "less than or equal"),
        ({"embedded": {"n_batchh": 512}}, "profiles.p.embedded.n_batchh", "Extra inputs are not permitted"),
        ({"common": {"temperature": 0.7}}, "profiles.p.common", "sampling parameters are out of scope"),
        ({"overlays": [{"embedded": {"n_batch": 1}}]}, "profiles.p.overlays.0.model", "Field required"),
    ],
)
def test_validation_errors_name_the_field(profile: dict, field: str, message: str) -> None:
    with pytest.raises(ProfileSetError) as info:
        load_profile_set(profile_set("bad", {"p": profile}), origin="bad.json")
    text = info.value.message
    assert "bad.json" in text and f"{field}:" in text and message in text


def test_wrong_schema_version_invalid_syntax_and_missing_source_are_refused() -> None:
    with pytest.raises(ProfileSetError, match="schema_version 2 is not supported"):
        load_profile_set({**profile_set("x", {}), "schema_version": 2}, origin="x")
    with pytest.raises(ProfileSetError, match="invalid JSON"):
        load_profile_set("{not json", origin="x")
    with pytest.raises(ProfileSetError, match="invalid TOML"):
        load_profile_set("schema_version = = 1", origin="x")
    no_source = profile_set("x", {"p": {"common": {"num_batch": 512}}}, source="")
    with pytest.raises(ProfileSetError, match=r"profiles\.p\.common\.num_batch: no source"):
        load_profile_set(no_source, origin="x")
    with pytest.raises(ProfileSetError, match="archetype ids are lower-case"):
        load_profile_set(profile_set("x", {"Bad Id": {}}), origin="x")


def test_the_bundled_set_is_valid_sourced_and_covers_common_machines() -> None:
    bundled = bundled_set()
    for pid, profile in bundled.profiles.items():
        for scope in [profile, *profile.overlays]:
            for name in SECTIONS:
                section = scope.section(name)
                for param, value in (section.values() if section else {}).items():
                    assert value.source and value.source != "", f"{pid}.{name}.{param}"
    wanted = [
        "apple-m1-8gb",
        "apple-m2-pro-16gb",
        "apple-m3-24gb",
        "apple-m3-max-64gb",
        "apple-m4-max-128gb",
        "nvidia-ada-8gb",
        "nvidia-ampere-12gb",
        "nvidia-ada-16gb",
        "nvidia-ada-24gb",
        "nvidia-ampere-48gb",
        "nvidia-hopper-80gb",
        "amd-strix-halo-128gb",
        "amd-phoenix-32gb",
        "amd-rdna3-24gb",
        "cpu-x86-32gb",
        "cpu-arm64-16gb",
    ]
    for archetype in wanted:
        assert any(
            archetype == pid or any(fnmatchcase(archetype, g) for g in p.matches) for pid, p in bundled.profiles.items()
        ), archetype
    # honesty: judgement calls say so
    assert (
        sum(
            "heuristic" in v.source
            for p in bundled.profiles.values()
            for n in SECTIONS
            for v in (p.section(n).values() if p.section(n) else {}).values()
        )
        >= 10
    )


def test_no_sampling_keys_anywhere_in_the_bundled_set() -> None:
    text = json.dumps(dump_profile_set(bundled_set()))
    for key in ("temperature", "top_p", "top_k", "repeat_penalty"):
        assert f'"{key}"' not in text


def test_lemonade_working_group_example_round_trips() -> None:
    example = {
        "strix-halo-128gb": {
            "llamacpp_backend": "vulkan",
            "llamacpp_args": "-b 2048 -ub 1024",
            "vllm_args": "--max-num-seqs 8 --gpu-memory-utilization 0.9",
        }
    }
    ours = from_lemonade(example)
    profile = ours.profiles["amd-strix-halo-128gb"]
    assert profile.lemonade_id == "strix-halo-128gb"
    assert profile.llamacpp is not None and profile.llamacpp.batch_size is not None
    assert profile.llamacpp.batch_size.value == 2048 and profile.llamacpp.ubatch_size is not None
    assert profile.llamacpp.ubatch_size.value == 1024
    assert profile.vllm is not None and profile.vllm.max_num_seqs is not None and profile.vllm.max_num_seqs.value == 8
    assert to_lemonade(ours) == example


def test_lemonade_per_backend_args_key_and_unknown_flags_survive() -> None:
    doc = {"strix-halo-128gb": {"llamacpp_vulkan_args": ["-b 2048 -ub 1024"], "ctx_size": -1}}
    ours = from_lemonade(doc)
    llama = ours.profiles["amd-strix-halo-128gb"].llamacpp
    assert llama is not None and llama.backend is not None and llama.backend.value == "vulkan"
    assert llama.ctx_size is None  # -1 is Lemonade's "auto": left to the backend
    parsed = parse_llamacpp_args("--flash-attn on -ctk q8_0 -ctv q8_0 --cache-reuse 256 -kvu")
    assert parsed == {
        "flash_attn": True,
        "cache_type_k": "q8_0",
        "cache_type_v": "q8_0",
        "kv_unified": True,
        "extra_args": "--cache-reuse 256",
    }
    again = from_lemonade(
        to_lemonade(
            from_lemonade(
                {"nvidia-ada-24gb": {"llamacpp_args": "--flash-attn on -ctk q8_0 -ctv q8_0 --cache-reuse 256"}}
            )
        )
    )
    assert to_lemonade(again) == {
        "nvidia-ada-24gb": {"llamacpp_args": "--flash-attn on -ctk q8_0 -ctv q8_0 --cache-reuse 256"}
    }


def test_bundled_strix_halo_exports_the_working_group_values() -> None:
    exported = to_lemonade(bundled_set())["strix-halo-128gb"]
    assert exported["llamacpp_backend"] == "vulkan"
    assert exported["llamacpp_args"].startswith("-b 2048 -ub 1024")
