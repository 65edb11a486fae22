"""The three tuning profiles: performance presets only (context, output room to plan for, KV precision).

Sampling is never a profile's: it is the model's and the client's. Changing answers is an explicit
opt-in (the ``sampling-presets`` plugin).
"""

from __future__ import annotations

from pydantic import BaseModel


class Profile(BaseModel):
    name: str
    #: the largest context autotune will propose (still clamped to the model's trained context)
    max_context: int
    #: output room ctx-sizing plans for when the request has no max_tokens (never sent as a limit)
    max_new_tokens: int
    #: KV cache type proposed by kv-precision
    kv_type: str


PROFILES: dict[str, Profile] = {
    "fast": Profile(name="fast", max_context=2048, max_new_tokens=512, kv_type="q8_0"),
    "balanced": Profile(name="balanced", max_context=8192, max_new_tokens=1024, kv_type="f16"),
    "quality": Profile(name="quality", max_context=32768, max_new_tokens=4096, kv_type="f16"),
}

DEFAULT_PROFILE = "balanced"


def get_profile(name: str | None) -> Profile:
    """The named profile; an unknown name is an error that lists the choices."""
    key = (name or DEFAULT_PROFILE).strip().lower()
    try:
        return PROFILES[key]
    except KeyError as exc:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}") from exc
