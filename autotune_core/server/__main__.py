"""``python -m autotune_core.server``: run the proxy (what ``autotune_core.start()`` launches)."""

from __future__ import annotations

from .launcher import main

if __name__ == "__main__":
    main()
