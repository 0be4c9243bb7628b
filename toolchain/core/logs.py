"""Logging helpers: quieting a library that logs every step while hanasc reports progress itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_logger(name: str, level: int) -> Iterator[None]:
    """Set logger ``name`` to ``level`` (e.g. ``logging.WARNING``) for the block, then restore its level."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
