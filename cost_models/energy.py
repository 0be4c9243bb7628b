"""Energy per inference: ops × energy/op (by precision) + bytes moved × energy/byte, from the target spec."""

from __future__ import annotations

from dataclasses import dataclass

from hanasc.cost_models.kernels import LoweredModel
from hanasc.cost_models.prior import dtype_precision
from hanasc.cost_models.spec import HardwareSpec


@dataclass(frozen=True)
class EnergyEstimate:
    compute_j: float
    memory_j: float
    ops_by_precision: dict[str, float]

    @property
    def total_j(self) -> float:
        return self.compute_j + self.memory_j


def estimate_energy(lowered: LoweredModel, spec: HardwareSpec) -> EnergyEstimate:
    """Sum over kernel calls of FLOPs × pJ/op at the precision the target runs, plus DRAM bytes × pJ/byte."""
    compute_pj = memory_pj = 0.0
    ops: dict[str, float] = {}
    for kernel in lowered.kernels:
        f = kernel.features
        precision = spec.precision(dtype_precision(f.compute_dtype))
        ops[precision] = ops.get(precision, 0.0) + f.flops * kernel.calls
        compute_pj += f.flops * kernel.calls * spec.energy_pj_per_op[precision]
        memory_pj += f.bytes_moved * kernel.calls * spec.energy_pj_per_byte
    return EnergyEstimate(compute_pj * 1e-12, memory_pj * 1e-12, ops)
