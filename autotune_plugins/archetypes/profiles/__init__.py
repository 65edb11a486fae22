"""Data: the bundled archetype profile set (a package so the TOML ships as package data)."""
