"""jsonio: orjson's speed, the standard library's answers."""

from __future__ import annotations

import json

import pytest

from autotune_core import jsonio


def test_small_documents_round_trip_compact() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "stream": False}
    assert jsonio.dumps(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert jsonio.loads(jsonio.dumps(body)) == body


def test_integers_beyond_64_bits_stay_exact() -> None:
    """orjson would read them as floats: a client's seed must reach the backend unchanged."""
    big = 2**70 + 1
    assert jsonio.loads(f'{{"seed": {big}}}'.encode()) == {"seed": big}
    assert jsonio.loads(jsonio.dumps({"seed": big})) == {"seed": big}


def test_constants_refused_and_other_encodings_read_like_the_stdlib() -> None:
    with pytest.raises(ValueError, match="NaN"):
        jsonio.loads(b'{"temperature": NaN}')
    assert jsonio.loads('{"x": "é"}'.encode("utf-16")) == {"x": "é"}
    with pytest.raises(json.JSONDecodeError):
        jsonio.loads(b'{"a":')


def test_deep_nesting_is_the_stdlib_verdict_and_what_is_read_can_be_written() -> None:
    with pytest.raises(RecursionError):
        jsonio.loads(b"[" * 30_000 + b"]" * 30_000)
    nested = b"[" * 400 + b"]" * 400  # deeper than orjson writes; read and written back by the stdlib
    assert jsonio.dumps(jsonio.loads(nested)) == nested


def test_non_string_keys_as_the_stdlib_writes_them() -> None:
    assert jsonio.loads(jsonio.dumps({1: "a", "b": None})) == {"1": "a", "b": None}


def test_negative_integers_below_64_bits_stay_exact() -> None:
    assert jsonio.loads(b'{"seed": -9999999999999999999}') == {"seed": -9999999999999999999}


def test_a_lone_surrogate_is_written_escaped_as_before() -> None:
    """A client that cut an emoji in half: the text goes upstream as it came (``\\ud83d``), never a 500."""
    text = "cut \ud83d here"
    assert jsonio.loads(jsonio.dumps({"content": text})) == {"content": text}


def test_a_model_servers_infinity_is_read_but_a_clients_is_refused() -> None:
    assert jsonio.loads(b'{"logprob": -Infinity}', constants=True) == {"logprob": float("-inf")}
    with pytest.raises(ValueError, match="Infinity"):
        jsonio.loads(b'{"logprob": -Infinity}')
