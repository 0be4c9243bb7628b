"""The roofline prior: a kernel's time from the target's published peak ops/s and bandwidth (``prior``)."""

from __future__ import annotations

from dataclasses import dataclass

from hanasc.cost_models.kernels import KernelFeatures
from hanasc.cost_models.spec import HardwareSpec


def dtype_precision(dtype: str) -> str:
    """fp32 / fp16 / int8 for a compute dtype (integer types below 16 bits count as int8)."""
    if dtype in ("float16", "bfloat16"):
        return "fp16"
    if dtype.startswith(("int", "uint")) and int("".join(c for c in dtype if c.isdigit()) or 32) <= 8:
        return "int8"
    return "fp32"


@dataclass(frozen=True)
class RooflineEstimate:
    seconds: float
    compute_s: float
    memory_s: float
    precision: str
    bound: str  # "compute" | "memory"


def roofline(features: KernelFeatures, spec: HardwareSpec) -> RooflineEstimate:
    """max(FLOPs / peak, bytes / bandwidth) + launch overhead; on-chip bandwidth when the kernel fits."""
    precision = spec.precision(dtype_precision(features.compute_dtype))
    compute_s = features.flops / spec.peak_ops_per_s[precision]
    fits = features.bytes_moved + features.scratch_bytes <= spec.on_chip_bytes
    bandwidth = spec.on_chip_bandwidth_Bps if fits else spec.memory_bandwidth_Bps
    memory_s = features.bytes_moved / bandwidth
    return RooflineEstimate(
        seconds=max(compute_s, memory_s) + spec.kernel_launch_s,
        compute_s=compute_s,
        memory_s=memory_s,
        precision=precision,
        bound="compute" if compute_s >= memory_s else "memory",
    )
