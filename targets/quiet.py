"""Exporting a TVM library without the runtime's harmless ``Scope Saving`` warnings on stderr.

TVM 0.27 logs ``executable.cc: Warning: Scope Saving:`` from C++ once per saved section of every Relax
executable it exports; they say nothing a user can act on and bury hanasc's own progress lines. The
native stderr is captured while exporting and every other line is written back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

HARMLESS = ("Warning: Scope Saving",)


@contextmanager
def filtered_native_stderr(harmless: tuple[str, ...] = HARMLESS) -> Iterator[None]:
    """Capture file descriptor 2 (what C++ code writes); replay the lines that match none of ``harmless``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not any(h in line for h in harmless)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def export_library(executable, path, **kwargs) -> None:
    """``executable.export_library(path, **kwargs)`` without the harmless runtime warnings."""
    with filtered_native_stderr():
        executable.export_library(str(path), **kwargs)
