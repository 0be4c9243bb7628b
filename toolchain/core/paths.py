"""Where hanasc keeps its caches (models, profile store, tuning databases)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's hanasc cache: $HANASC_CACHE, else $XDG_CACHE_HOME/hanasc, else ~/.cache/hanasc."""
    if env := os.environ.get("HANASC_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hanasc"
