"""The memory term beside a simulated latency: the roofline prior's memory time of each shipped kernel
(bytes moved / the spec's bandwidth; on-chip bandwidth when the kernel's data fits on chip), because the
scheduling model assumes every load hits the L1 cache."""

from __future__ import annotations

from dataclasses import replace

from hanasc.cost_models.kernels import lower_for_costs
from hanasc.cost_models.prior import roofline
from hanasc.cost_models.simulation.report import Simulation
from hanasc.cost_models.spec import load_spec


def memory_seconds(mod, target_name: str) -> dict[str, float]:
    """Each kernel of the shipped lowering of ``mod``: its roofline memory time per inference (all calls)."""
    spec = load_spec(target_name)
    lowered = lower_for_costs(mod, target_name, "shipped")
    return {k.name: roofline(k.features, spec).memory_s * k.calls for k in lowered.kernels}


def with_memory_term(sim: Simulation, mod, target_name: str) -> Simulation:
    """``sim`` with each kernel's memory term (kernels matched by name) and the term's provenance."""
    memory = memory_seconds(mod, target_name)
    kernels = [replace(k, memory_s=memory.get(k.name)) for k in sim.kernels]
    matched = sum(k.memory_s is not None for k in kernels)
    source = (
        f"prior (roofline: bytes moved per kernel / the {target_name} spec's bandwidth, "
        f"{matched} of {len(memory)} kernels matched)"
    )
    return replace(sim, kernels=kernels, memory_source=source)
