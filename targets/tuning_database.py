"""The per-target MetaSchedule tuning database on disk: opened for the tuner (under its lock, repaired
after an interrupted append) or as a private snapshot for readers, so that concurrent builds and tuning
runs never read half-written records."""

from __future__ import annotations

from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.cache_safety import (
    UNREADABLE,
    cache_warning,
    file_lock,
    json_lines,
    quarantine,
    repair_json_lines,
)

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"


def open_database(path: Path, snapshot: bool = False):
    """The JSON tuning database in ``path`` (created if missing).

    The caller that tunes (and so appends) holds :func:`database_lock`; the files are repaired first
    (an interrupted append). ``snapshot=True`` is for readers that do not hold the lock: the complete
    lines of the files are copied to a private folder, so that another process's appends (and the
    workloads this process's build commits) never interleave with the shared files.
    """
    from tvm.s_tir import meta_schedule as ms

    path.mkdir(parents=True, exist_ok=True)
    folder = _snapshot(path) if snapshot else path
    if not snapshot:
        _repair(path)
    return ms.database.JSONDatabase(
        path_workload=str(folder / WORKLOADS), path_tuning_record=str(folder / RECORDS), allow_missing=True
    )


def database_lock(path: Path):
    """The lock a process holds while it tunes into (appends to) the database in ``path``."""
    return file_lock(path / ".lock", f"the tuning database {path.name}")


def _repair(path: Path) -> None:
    """Make the database files loadable after an interrupted write: a cut-short last line is dropped; a
    workload file corrupt before its end is moved aside with its records (they index it by position);
    records of workloads that are gone are dropped."""
    workloads, records = path / WORKLOADS, path / RECORDS
    if not repair_json_lines(workloads):
        if records.exists():
            quarantine(records, f"its workloads ({WORKLOADS}) were unreadable")
        return
    repair_json_lines(records)
    _drop_orphan_records(records, _line_count(workloads))


def _line_count(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.is_file() else 0


def _drop_orphan_records(records: Path, workloads: int) -> None:
    if not records.is_file():
        return
    lines = json_lines(records.read_bytes())  # all readable: repaired before
    kept = [line for line, value in lines if _record_workload(value) < workloads]
    if len(kept) == len(lines):
        return
    with atomic_file(records) as tmp:
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
    cache_warning(f"{records}: dropped {len(lines) - len(kept)} records of workloads that are gone")


def _record_workload(record) -> int:
    return int(record[0]) if isinstance(record, list) and record and isinstance(record[0], int) else 1 << 62


def _snapshot(path: Path) -> Path:
    """A private copy of the complete, parseable lines of the database files (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="hanasc-tuning-db-"))
    atexit.register(shutil.rmtree, folder, True)
    workloads = 0
    for name in (WORKLOADS, RECORDS):
        source = path / name
        data = source.read_bytes() if source.is_file() else b""
        kept = []
        for line, value in json_lines(data[: data.rfind(b"\n") + 1]):  # complete lines only
            if value is UNREADABLE:
                if name == WORKLOADS:  # positions of later workloads cannot be trusted: stop here
                    break
                continue
            if name == RECORDS and _record_workload(value) >= workloads:
                continue
            kept.append(line)
        if name == WORKLOADS:
            workloads = len(kept)
        (folder / name).write_bytes(b"".join(line + b"\n" for line in kept))
    return folder
