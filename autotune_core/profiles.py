"""The three tuning profiles. Sampling defaults apply only where the client sent none."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Profile(BaseModel):
    name: str
    #: the largest context autotune will propose (still clamped to the model's trained context)
    max_context: int
    #: output budget when the request has no max_tokens
    max_new_tokens: int
    #: KV cache type proposed by kv-precision
    kv_type: str
    sampling: dict[str, Any] = Field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "fast": Profile(name="fast", max_context=2048, max_new_tokens=512, kv_type="q8_0",
                    sampling={"temperature": 0.1, "top_p": 0.9, "repeat_penalty": 1.15}),
    "balanced": Profile(name="balanced", max_context=8192, max_new_tokens=1024, kv_type="f16",
                        sampling={"temperature": 0.7, "top_p": 0.95, "repeat_penalty": 1.08}),
    "quality": Profile(name="quality", max_context=32768, max_new_tokens=4096, kv_type="f16",
                       sampling={"temperature": 0.8, "top_p": 0.95, "repeat_penalty": 1.05}),
}

DEFAULT_PROFILE = "balanced"


def get_profile(name: str | None) -> Profile:
    """The named profile; an unknown name is an error that lists the choices."""
    key = (name or DEFAULT_PROFILE).strip().lower()
    try:
        return PROFILES[key]
    except KeyError as exc:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}") from exc
