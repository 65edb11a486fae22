"""An example third-party archetype set for autotune.

The plugin registers one :class:`~autotune_core.archetypes.ProfileSet` through the
``register_archetypes`` hook. autotune validates it with the same schema as the bundled set, and the
fallback chain gives it precedence per knob by its ``priority``; ``autotune hardware`` shows which
value won and which bundled value it overrode.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from autotune_core.archetypes import ProfileSet, load_profile_set
from autotune_core.markers import hookimpl

__all__ = ["ExampleArchetypesPlugin", "example_set"]


def example_set() -> ProfileSet:
    """The package's profile set, validated (a bad edit fails loudly, naming the field)."""
    text = resources.files(__name__).joinpath("profiles.toml").read_text(encoding="utf-8")
    return load_profile_set(text, origin="autotune-archetypes-example profiles.toml", fmt="toml")


class ExampleArchetypesPlugin:
    """Adds an Intel Arc B580 archetype profile and overrides one RTX 4090 value."""

    name = "archetypes-example"

    @hookimpl
    def register_archetypes(self, register: Callable[..., None]) -> None:
        register(example_set())
