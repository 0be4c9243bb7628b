"""Kernels timed where they run: inside whole networks built as hanasc ships them.

A kernel timed alone runs with warm caches, its own layout transforms and quantize steps around it; inside
the artifact it reads what the previous kernel just wrote, in the layout and precision the neighbours
chose. So the host's latency model learns from whole networks: each is lowered by the shipped pipeline
(:func:`hanasc.cost_models.kernels.lower_to_kernels` with ``lowering="shipped"``, the same fusion the build
runs, so the VM calls its kernels by the same names), built (:func:`hanasc.targets.late_binding.
compile_late_bound`), and run with the VM's instrument hook, which times every kernel call in place. The
uninstrumented whole-model time is measured too: the per-call runtime overhead is fitted on it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

from hanasc.cost_models.kernels import Kernel, KernelFeatures, LoweredModel, lower_to_kernels
from hanasc.cost_models.latency_calibration import fit_calibration
from hanasc.cost_models.latency_model import train
from hanasc.cost_models.store import KernelRow, tvm_version
from hanasc.cost_models.timing import (
    build_for,
    call_samples,
    random_inputs,
    single_thread,
    time_executable,
    time_executable_cpu,
)


@dataclass(frozen=True)
class NetworkProfile:
    """One network built as shipped: its kernels, each one's median seconds per call inside it, and the
    uninstrumented whole-model time (median over repeats; ``spread`` = (max - min) / median)."""

    lowered: LoweredModel
    call_s: dict[str, float]
    call_spread: dict[str, float]
    samples: dict[str, int]
    whole_s: float
    whole_spread: float
    clock: str

    @property
    def kernel_sum_s(self) -> float:
        """Σ in-network kernel seconds x calls (what the VM's own overhead is added to)."""
        return sum(self.call_s[k.name] * k.calls for k in self.lowered.kernels)

    def to_json(self) -> dict:
        kernels = [
            {"name": k.name, "signature": k.signature, "features": k.features.to_json(), "calls": k.calls}
            for k in self.lowered.kernels
        ]
        lowered = {"target": self.lowered.target, "kernels": kernels, "call_order": self.lowered.call_order}
        return {
            "lowered": lowered,
            **{k: getattr(self, k) for k in ("call_s", "call_spread", "samples", "whole_s", "whole_spread")},
            "clock": self.clock,
        }

    @classmethod
    def from_json(cls, data: dict) -> NetworkProfile:
        low = data["lowered"]
        kernels = [
            Kernel(k["name"], k["signature"], KernelFeatures.from_json(k["features"]), k["calls"], None)
            for k in low["kernels"]
        ]
        fields = {k: v for k, v in data.items() if k != "lowered"}
        return cls(LoweredModel(low["target"], kernels, list(low["call_order"])), **fields)


def profile_network(mod, target_name: str = "host", runs: int = 15, repeat: int = 7) -> NetworkProfile | None:
    """Lower, build and time ``mod`` (weights as parameters or bound) on this CPU as hanasc ships it; None
    when the artifact's kernel calls are not the lowered module's (a build that fell back to another
    lowering)."""
    import tvm
    from tvm import relax

    lowered = lower_to_kernels(mod, target_name, lowering="shipped")
    executable = build_for(mod, target_name)
    one_thread = single_thread()
    clock = time.thread_time if one_thread else time.perf_counter
    vm = relax.VirtualMachine(executable, tvm.cpu())
    timed = call_samples(vm, random_inputs(mod), runs, clock)
    if timed is None or timed[0] != lowered.call_order:
        return None
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, seconds in zip(*timed, strict=True):
        by_name[name].extend(seconds)
    call_s = {name: statistics.median(s) for name, s in by_name.items()}
    spread = {n: (max(s) - min(s)) / call_s[n] if call_s[n] > 0 else 0.0 for n, s in by_name.items()}
    whole = (
        time_executable_cpu(executable, mod, repeat=repeat)
        if one_thread
        else time_executable(executable, mod, target_name, repeat=repeat, min_repeat_ms=20.0)
    )
    return NetworkProfile(
        lowered,
        call_s,
        spread,
        {n: len(s) for n, s in by_name.items()},
        whole.median_ms / 1e3,
        whole.spread,
        "thread CPU time" if one_thread else "wall clock",
    )


def network_rows(profile: NetworkProfile, target: str, device: str) -> list:
    """One profile-store row per distinct kernel of the network: its in-network median per call."""
    version = tvm_version()
    return [
        KernelRow(
            target,
            version,
            device,
            k.signature,
            k.features,
            profile.call_s[k.name],
            profile.call_spread[k.name],
            profile.samples[k.name],
            1,
        )
        for k in profile.lowered.kernels
    ]


def merged_rows(profiles: list[NetworkProfile], target: str, device: str) -> list:
    """One row per distinct kernel over all networks: the median of its in-network times."""
    import dataclasses

    by_signature: dict[str, list] = defaultdict(list)
    for profile in profiles:
        for row in network_rows(profile, target, device):
            by_signature[row.signature].append(row)
    merged = []
    for rows in by_signature.values():
        median = statistics.median(r.median_s for r in rows)
        repeats = sum(r.repeats for r in rows)
        merged.append(dataclasses.replace(rows[0], median_s=median, repeats=repeats))
    return merged


def train_on_networks(profiles: list[NetworkProfile], target: str, device: str, params: dict | None = None):
    """The latency model of the shipped kernels (``lowering="shipped"``), trained on their in-network
    times, its per-call runtime overhead fitted on the networks' uninstrumented whole-model times."""
    model = train(merged_rows(profiles, target, device), target, device, params, lowering="shipped")
    sums = [model.predict_sum_s(p.lowered) for p in profiles]
    calls = [p.lowered.total_calls for p in profiles]
    whole = [p.whole_s for p in profiles]
    cal = fit_calibration(sums, calls, whole, fit_scale=False, base=model.meta.version)
    return model.with_calibration(cal)
