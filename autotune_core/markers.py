"""The pluggy markers. One project name for the manager, the markers and the entry-point group."""

import pluggy

PROJECT = "autotune"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
