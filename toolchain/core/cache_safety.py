"""Shared-cache safety: file locks between hanasc processes and repair of files a killed process left.

Several ``hanasc`` processes may share ``~/.cache/hanasc`` (two compiles at once, a compile beside a
``profile``). What they share is guarded here:

- :func:`file_lock`: an exclusive ``flock`` on a lock file (a run's work folder, a tuning database); a
  process that has to wait says so once on stderr. The lock goes with the process, SIGKILL included.
- :func:`repair_json_lines`: a JSON-lines file whose last line a killed process cut short is truncated to
  its last complete line (one-line warning); one corrupt in the middle is moved aside and started afresh.
- :func:`quarantine`: move a corrupt cache file aside (``NAME.corrupt-<time>``) with a one-line warning.

The profile store (SQLite) uses WAL and a busy timeout (:mod:`hanasc.cost_models.store`); JSON files are
written to a temporary path and renamed (:mod:`hanasc.core.atomic`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hanasc.core.atomic import atomic_file


def cache_warning(message: str) -> None:
    """One line on stderr: what hanasc did about a cache file."""
    print(f"hanasc: warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; wait for another holder,
    saying once that ``what`` is in use by another hanasc process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            cache_warning(f"{what} is in use by another hanasc process{holder}: waiting for it ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def quarantine(path: Path, reason: str) -> Path:
    """Move a corrupt cache file aside so that it is rebuilt; returns where it went."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, aside)
    cache_warning(f"{path}: {reason}; moved aside to {aside.name}, it will be rebuilt")
    return aside


UNREADABLE = object()  # the value of a line that is not JSON


def json_lines(data: bytes) -> list[tuple[bytes, object]]:
    """The non-blank lines of ``data`` (one JSON value per line), each with its value or UNREADABLE."""
    parsed = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            parsed.append((line, json.loads(line)))
        except (ValueError, UnicodeDecodeError):
            parsed.append((line, UNREADABLE))
    return parsed


def repair_json_lines(path: Path) -> bool:
    """Make ``path`` (one JSON value per line) loadable; True when it is usable as it now stands.

    A cut-short last line (a process killed mid-append) is dropped. Any other unreadable line means the
    file cannot be trusted (later lines may refer to earlier ones by position): it is moved aside and
    False is returned.
    """
    if not path.is_file():
        return True
    lines = json_lines(path.read_bytes())
    bad = [index for index, (_, value) in enumerate(lines) if value is UNREADABLE]
    if not bad:
        return True
    if bad[0] != len(lines) - 1:  # corruption before the end: positions of later lines cannot be trusted
        quarantine(path, f"entry {bad[0] + 1} is not JSON")
        return False

    with atomic_file(path) as tmp:
        tmp.write_bytes(b"".join(line + b"\n" for line, _ in lines[:-1]))
    cache_warning(f"{path}: dropped an incomplete last line (an interrupted write)")
    return True
