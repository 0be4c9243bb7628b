"""The profile store: one SQLite file of kernel timings and whole-model measurements.

Kernel rows are keyed by (target, TVM version, device, kernel signature): profiling again reuses them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.cache_safety import quarantine
from hanasc.core.paths import cache_dir
from hanasc.cost_models.kernels import KernelFeatures

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    target TEXT NOT NULL, tvm_version TEXT NOT NULL, device TEXT NOT NULL, signature TEXT NOT NULL,
    features TEXT NOT NULL, median_s REAL NOT NULL, spread REAL NOT NULL, repeats INTEGER NOT NULL,
    number INTEGER NOT NULL, measured_at REAL NOT NULL,
    PRIMARY KEY (target, tvm_version, device, signature)
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_hash TEXT NOT NULL, model_name TEXT NOT NULL, target TEXT NOT NULL, device TEXT NOT NULL,
    tvm_version TEXT NOT NULL, ms REAL NOT NULL, runs INTEGER NOT NULL, source TEXT NOT NULL,
    kernel_calls INTEGER, measured_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_target ON models (target, device);
"""


def default_db_path() -> Path:
    return cache_dir() / "profiles.sqlite"


def tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


@dataclass(frozen=True)
class KernelRow:
    target: str
    tvm_version: str
    device: str
    signature: str
    features: KernelFeatures
    median_s: float
    spread: float
    repeats: int
    number: int


@dataclass(frozen=True)
class ModelRow:
    model_hash: str
    model_name: str
    target: str
    device: str
    tvm_version: str
    ms: float
    runs: int
    source: str  # "measured" (by hanasc here) or "imported" (a user's CSV)
    kernel_calls: int | None = None


BUSY_TIMEOUT_S = 60.0  # how long a write waits for another hanasc process's write


def _connect(path: Path) -> sqlite3.Connection:
    """A connection shared safely with other processes: WAL journal (readers never block the writer),
    a busy timeout, the schema, and a quick integrity check (``sqlite3.DatabaseError`` if damaged)."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        status = conn.execute("PRAGMA quick_check").fetchone()
        if not status or status[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {status[0] if status else 'no answer'}")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


class ProfileStore:
    """Kernel timings and whole-model measurements in one SQLite file."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = _connect(self.path)
        except sqlite3.DatabaseError as exc:  # not a database, or damaged: it is a cache, rebuild it
            quarantine(self.path, f"unreadable profile store ({exc})")
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._conn = _connect(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_kernel(self, target: str, device: str, signature: str, version: str | None = None):
        row = self._conn.execute(
            "SELECT * FROM kernels WHERE target=? AND tvm_version=? AND device=? AND signature=?",
            (target, version or tvm_version(), device, signature),
        ).fetchone()
        return _kernel_row(row) if row else None

    def put_kernel(self, row: KernelRow) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO kernels VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.target,
                    row.tvm_version,
                    row.device,
                    row.signature,
                    json.dumps(row.features.to_json()),
                    row.median_s,
                    row.spread,
                    row.repeats,
                    row.number,
                    time.time(),
                ),
            )

    def kernels(self, target: str, device: str | None = None, version: str | None = None) -> list[KernelRow]:
        """Every kernel row of a target (one device, or all), for the current TVM version by default."""
        query = "SELECT * FROM kernels WHERE target=? AND tvm_version=?"
        args: list = [target, version or tvm_version()]
        if device is not None:
            query += " AND device=?"
            args.append(device)
        return [_kernel_row(r) for r in self._conn.execute(query + " ORDER BY signature", args)]

    def devices(self, target: str) -> list[tuple[str, int]]:
        """Devices with kernel rows for a target, most rows first."""
        rows = self._conn.execute(
            "SELECT device, COUNT(*) FROM kernels WHERE target=? AND tvm_version=? GROUP BY device "
            "ORDER BY COUNT(*) DESC",
            (target, tvm_version()),
        )
        return [(d, int(n)) for d, n in rows]

    def put_model(self, row: ModelRow) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO models (model_hash, model_name, target, device, tvm_version, ms, runs, source, "
                "kernel_calls, measured_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.model_hash,
                    row.model_name,
                    row.target,
                    row.device,
                    row.tvm_version,
                    row.ms,
                    row.runs,
                    row.source,
                    row.kernel_calls,
                    time.time(),
                ),
            )

    def models(self, target: str, device: str | None = None) -> list[ModelRow]:
        query = (
            "SELECT model_hash, model_name, target, device, tvm_version, ms, runs, source, kernel_calls "
            "FROM models WHERE target=?"
        )
        args: list = [target]
        if device is not None:
            query += " AND device=?"
            args.append(device)
        return [ModelRow(*r) for r in self._conn.execute(query + " ORDER BY id", args)]


def _kernel_row(r) -> KernelRow:
    return KernelRow(
        target=r[0],
        tvm_version=r[1],
        device=r[2],
        signature=r[3],
        features=KernelFeatures.from_json(json.loads(r[4])),
        median_s=r[5],
        spread=r[6],
        repeats=r[7],
        number=r[8],
    )
