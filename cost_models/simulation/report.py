"""A simulated latency: cycles per kernel and in total, milliseconds at the core's clock, the memory term
beside it (never folded in silently), and where each number comes from."""

from __future__ import annotations

from dataclasses import dataclass, field

from hanasc.cost_models.simulation.cores import SimCore
from hanasc.cost_models.simulation.validation import host_validation


@dataclass(frozen=True)
class KernelCycles:
    name: str  # the kernel (a TVM PrimFunc of model.so), or another library's name in parentheses
    cycles: float  # per inference
    memory_s: float | None = None  # the roofline memory term of the kernel's bytes moved (None: unknown)


@dataclass
class Simulation:
    """One inference of a model library, simulated on ``core``."""

    core: SimCore
    kernels: list[KernelCycles]
    blocks: int  # distinct blocks executed in the inference
    instructions: int  # instructions executed in the inference
    fallback_cycles: float = 0.0  # cycles of blocks llvm-mca could not cost (1 per instruction)
    memory_source: str = ""  # how the memory term was obtained ("" when there is none)
    notes: list[str] = field(default_factory=list)

    @property
    def cycles(self) -> float:
        return sum(k.cycles for k in self.kernels)

    def ms(self, cycles: float) -> float:
        return cycles / self.core.clock_hz * 1e3

    @property
    def total_ms(self) -> float:
        return self.ms(self.cycles)

    @property
    def memory_ms(self) -> float | None:
        if not self.memory_source:
            return None
        return sum(k.memory_s or 0.0 for k in self.kernels) * 1e3

    @property
    def bound_ms(self) -> float | None:
        """Each kernel at the larger of its simulated time and its memory term (a roofline bound on top of
        the core model, which assumes every load hits the L1 cache)."""
        if not self.memory_source:
            return None
        return sum(max(self.ms(k.cycles), (k.memory_s or 0.0) * 1e3) for k in self.kernels)

    def to_json(self) -> dict:
        data = {
            "target": self.core.target,
            "total_ms": round(self.total_ms, 4),
            "cycles": round(self.cycles),
            "clock_ghz": self.core.clock_ghz,
            "provenance": self.core.provenance,
            "host_validation": host_validation(),
            "scheduling_model": self.core.model.description,
            "scheduling_note": self.core.note,
            "kernels": [
                {
                    "name": k.name,
                    "cycles": round(k.cycles),
                    "ms": round(self.ms(k.cycles), 4),
                    **({"memory_ms": round(k.memory_s * 1e3, 4)} if k.memory_s is not None else {}),
                }
                for k in self.kernels
            ],
            "blocks": self.blocks,
            "instructions": self.instructions,
            "fallback_cycles": round(self.fallback_cycles),
            "notes": self.notes,
        }
        if self.memory_source:
            data["memory"] = {
                "memory_ms": round(self.memory_ms or 0.0, 4),
                "bound_ms": round(self.bound_ms or 0.0, 4),
                "provenance": self.memory_source,
            }
        return data

    def lines(self, top: int = 15) -> list[str]:
        """A readable summary: the total, the costliest kernels, the memory term, the provenance."""
        out = [f"{self.core.target}: {self.total_ms:.3f} ms, {self.cycles:,.0f} cycles per inference"]
        out.append(f"  {self.core.provenance}")
        out.append(f"  {host_validation()}")
        if self.core.note:
            out.append(f"  scheduling model: {self.core.note}")
        shown = sorted(self.kernels, key=lambda k: -k.cycles)[:top]
        width = max((len(k.name) for k in shown), default=10)
        for k in shown:
            memory = f"  memory {k.memory_s * 1e3:8.3f} ms" if k.memory_s is not None else ""
            share = k.cycles / max(self.cycles, 1.0)
            out.append(f"  {k.name:<{width}}  {self.ms(k.cycles):8.3f} ms  {share:6.1%}{memory}")
        if len(self.kernels) > top:
            out.append(f"  ... {len(self.kernels) - top} more")
        if self.memory_source:
            out.append(
                f"  memory term: {self.memory_ms:.3f} ms in all; each kernel at max(simulated, memory): "
                f"{self.bound_ms:.3f} ms ({self.memory_source})"
            )
        out += [f"  note: {n}" for n in self.notes]
        return out
