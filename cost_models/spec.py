"""Per-target hardware specs (``specs/<target>.json``, sources cited); the host's peak is measured here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.core.paths import cache_dir
from hanasc.cost_models.profiler import local_device_id
from hanasc.cost_models.target_info import get_target

PRECISIONS = ("fp32", "fp16", "int8")
FALLBACK = {
    "fp32": ("fp32", "fp16", "int8"),
    "fp16": ("fp16", "fp32", "int8"),
    "int8": ("int8", "fp16", "fp32"),
}


@dataclass(frozen=True)
class HardwareSpec:
    """Published (or, for the host, measured) peak figures of one target."""

    name: str
    peak_ops_per_s: dict[str, float]
    memory_bandwidth_Bps: float
    on_chip_bytes: int
    on_chip_bandwidth_Bps: float
    kernel_launch_s: float
    energy_pj_per_op: dict[str, float]
    energy_pj_per_byte: float
    sources: list[str] = field(default_factory=list)
    derivation: dict[str, str] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)  # host only: what was measured here
    cores: int = 1  # cores the published peak counts
    runner_threads: int = 0  # threads the target's runner uses (0: every core)
    sustained_clock_ratio: float = 1.0  # sustained / nominal clock under load (peak figures use nominal)
    efficiency: str = ""  # "cpu": kernels reach the fractions measured on a CPU host (efficiency model)

    def precision(self, dtype_precision: str) -> str:
        """The precision the target really runs a kernel in (e.g. fp32 runs as fp16 on an NPU)."""
        for p in FALLBACK.get(dtype_precision, FALLBACK["fp32"]):
            if p in self.peak_ops_per_s:
                return p
        raise ValueError(f"{self.name}: spec lists no peak ops/s")

    def peak(self, dtype_precision: str) -> float:
        return self.peak_ops_per_s[self.precision(dtype_precision)]

    def energy_per_op(self, dtype_precision: str) -> float:
        return self.energy_pj_per_op[self.precision(dtype_precision)]


def load_spec(target_name: str, cache: Path | None = None) -> HardwareSpec:
    """The spec of a target; for the host, peak fp32 and bandwidth are measured once per CPU and cached."""
    target = get_target(target_name)
    raw = json.loads(target.spec_path.read_text())
    measured: dict[str, float] = {}
    if raw.get("measure"):
        measured = host_measurements(cache)
        ratios = raw["precision_ratio_to_fp32"]
        raw["peak_ops_per_s"] = {p: measured["fp32_flops"] * r for p, r in ratios.items()}
        raw["memory_bandwidth_Bps"] = measured["bandwidth_Bps"]
    return HardwareSpec(
        name=raw["name"],
        peak_ops_per_s={k: float(v) for k, v in raw["peak_ops_per_s"].items()},
        memory_bandwidth_Bps=float(raw["memory_bandwidth_Bps"]),
        on_chip_bytes=int(raw["on_chip_bytes"]),
        on_chip_bandwidth_Bps=float(raw["on_chip_bandwidth_Bps"]),
        kernel_launch_s=float(raw["kernel_launch_s"]),
        energy_pj_per_op={k: float(v) for k, v in raw["energy_pj_per_op"].items()},
        energy_pj_per_byte=float(raw["energy_pj_per_byte"]),
        sources=list(raw.get("sources", [])),
        derivation=dict(raw.get("derivation", {})),
        measured=measured,
        cores=int(raw.get("cores", 1)),
        runner_threads=int(raw.get("runner_threads", 0)),
        sustained_clock_ratio=float(raw.get("sustained_clock_ratio", 1.0)),
        efficiency=str(raw.get("efficiency", "")),
    )


def host_measurements(cache: Path | None = None) -> dict[str, float]:
    """Peak fp32 FLOP/s (numpy sgemm) and copy bandwidth of this CPU, measured once and cached per CPU."""
    path = Path(cache) if cache else cache_dir() / "host_spec.json"
    device = local_device_id()
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("device") == device:
            return {k: float(v) for k, v in data.items() if k != "device"}
    measured = {"fp32_flops": measure_sgemm_flops(), "bandwidth_Bps": measure_copy_bandwidth()}

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"device": device, **measured}, indent=2))
    return measured


def measure_sgemm_flops(n: int = 1024, runs: int = 5) -> float:
    """Best float32 matmul rate of numpy's BLAS (all threads), in FLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(runs))
    return 2.0 * n**3 / best


def measure_copy_bandwidth(nbytes: int = 128 << 20, runs: int = 5) -> float:
    """Best read+write bandwidth of a large numpy copy, in bytes/s."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(runs))
    return 2.0 * nbytes / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
