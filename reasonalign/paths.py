"""Where reasonalign keeps downloads and converted models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$REASONALIGN_CACHE``, else ``$XDG_CACHE_HOME/reasonalign`` (~/.cache)."""
    if override:
        p = Path(override)
    elif os.environ.get("REASONALIGN_CACHE"):
        p = Path(os.environ["REASONALIGN_CACHE"])
    else:
        p = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reasonalign"
    p = p.expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p
