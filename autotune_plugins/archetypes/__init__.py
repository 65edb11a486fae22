"""Hardware archetypes: the bundled profile set (``archetype-profiles``), the plan-time
application (``auto-tune``), the local cache and refresh, and the community bench/merge loop.

The contract (classification, schema, fallback chain) is in :mod:`autotune_core.archetypes`.
"""
