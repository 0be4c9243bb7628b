"""The cost report: per-kernel and total latency, memory and energy, each figure with its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

from hanasc.cost_models.provenance import Figure


@dataclass(frozen=True)
class KernelCost:
    name: str
    op_kind: str
    calls: int
    flops: float
    bytes_moved: int
    latency: Figure  # per call, ms

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "op_kind": self.op_kind,
            "calls": self.calls,
            "flops": self.flops,
            "bytes_moved": self.bytes_moved,
            "latency_ms": self.latency.to_json(),
        }


@dataclass
class CostReport:
    target: str
    kernels: list[KernelCost]
    latency: Figure  # ms per inference
    memory: dict[str, Figure]  # weights, activations, workspace, total (bytes)
    energy: Figure  # mJ per inference
    flops: float
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "format": "hanasc.costs/1",
            "target": self.target,
            "latency_ms": self.latency.to_json(),
            "memory_bytes": {k: v.to_json() for k, v in self.memory.items()},
            "energy_mj": self.energy.to_json(),
            "flops": self.flops,
            "kernels": [k.to_json() for k in self.kernels],
            "notes": self.notes,
        }

    def table(self, top: int = 15) -> str:
        """A plain-text table: the slowest kernels, then the totals with their sources."""
        lines = [f"costs on {self.target}", ""]
        header = f"{'kernel':<44} {'kind':<11} {'calls':>5} {'MFLOP':>9} {'ms/call':>9}  source"
        lines += [header, "-" * len(header)]
        ranked = sorted(self.kernels, key=lambda k: k.latency.value * k.calls, reverse=True)
        for k in ranked[:top]:
            lines.append(
                f"{k.name[:44]:<44} {k.op_kind:<11} {k.calls:>5} {k.flops / 1e6:>9.2f} "
                f"{k.latency.value:>9.4f}  {k.latency.source}"
            )
        if len(ranked) > top:
            lines.append(f"... {len(ranked) - top} more kernels")
        lines += ["", f"{'latency':<22} {self.latency}"]
        how = self.latency.detail
        if "interval_ms" in how:
            lo, hi = how["interval_ms"]
            lines.append(
                f"{'':<22} {how['confidence']:.0%} interval {lo:.4g} .. {hi:.4g} ms ({how['interval_from']})"
            )
        if "model" in how:
            lines.append(
                f"{'':<22} by {how['model']}" + (f" bending {how['prior']}" if how.get("prior") else "")
            )
        for name, fig in self.memory.items():
            lines.append(f"{'memory ' + name:<22} {fig.value / 1024:.1f} KiB ({fig.source})")
        lines.append(f"{'energy':<22} {self.energy}")
        lines.append(f"{'FLOPs':<22} {self.flops / 1e6:.1f} M")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
