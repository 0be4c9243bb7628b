"""The host validation figure that goes beside every simulated latency: how well the same method
predicted measured latencies on this machine's CPU (``bench/bench_simulate.py --record`` writes it)."""

from __future__ import annotations

import json
from pathlib import Path

from hanasc.core.atomic import atomic_file

RECORD = Path(__file__).with_name("host_validation.json")


def host_validation(path: Path = RECORD) -> str:
    """One line: models, share within ±20 % and ±10 %, Spearman, CPU and date; or that there is none."""
    if not path.is_file():
        return "host validation: none recorded (run bench/bench_simulate.py --record)"
    v = json.loads(path.read_text())
    return (
        f"host validation ({v['date']}, {v['cpu']}, {v['models']} models): {v['within_20']:.0%} within "
        f"±20 %, {v['within_10']:.0%} within ±10 %, Spearman {v['spearman']:.3f} (bench/bench_simulate.py)"
    )


def record(summary: dict, path: Path = RECORD) -> None:
    """Keep a validation summary (``date``, ``cpu``, ``models``, ``within_10``, ``within_20``,
    ``spearman``, ...) for :func:`host_validation`."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
