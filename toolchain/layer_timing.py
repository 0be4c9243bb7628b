"""Per-layer times of a shipped artifact: each searchable layer's kernel timed inside the whole model.

The VM's instrument hook sees every kernel call in execution order. The kernels that compute a layer
(their names hold ``conv2d``, ``matmul`` or ``dense``) are matched to the layer table in order; everything
else (layout transforms, pooling, unfused adds, quantize kernels of the input) is "other". When the
counts do not match (a pipeline that splits or merges layers), no per-layer figure is given and the
search keeps its kernel-profile estimates.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

LAYER_KERNEL_MARKERS = ("conv2d", "matmul", "dense")


@dataclass(frozen=True)
class ShippedTimes:
    """Median milliseconds per searchable layer, of the other kernels, and of the whole instrumented run."""

    layer_ms: dict[str, float]
    other_ms: float
    runs: int


def is_layer_kernel(name: str) -> bool:
    return not name.startswith("vm.builtin") and any(m in name for m in LAYER_KERNEL_MARKERS)


def kernel_call_times(vm, args: list, runs: int) -> tuple[list[str], list[float]] | None:
    """``(kernel names in call order, median ms of each call)`` of ``vm["main"](*args)`` over ``runs``
    instrumented runs (after one uninstrumented warm-up); None when the call sequence changes between
    runs."""
    from hanasc.cost_models.network_profile import call_samples

    timed = call_samples(vm, args, runs)
    if timed is None:
        return None
    order, samples = timed
    return order, [statistics.median(s) * 1e3 for s in samples]


def time_layers(executable, inputs: list[np.ndarray], layer_names: list[str], runs: int = 10):
    """:class:`ShippedTimes` of ``executable`` on this CPU, or None when its layer kernels do not map one
    to one onto ``layer_names``."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs]
    timed = kernel_call_times(vm, args, runs)
    if timed is None:  # a data-dependent call sequence: not a fixed pipeline
        return None
    order, kernel_ms = timed
    layer_calls = [i for i, name in enumerate(order) if is_layer_kernel(name)]
    if len(layer_calls) != len(layer_names):
        return None
    layer_ms = {layer: kernel_ms[i] for layer, i in zip(layer_names, layer_calls, strict=True)}
    layer_set = set(layer_calls)
    other = sum(ms for i, ms in enumerate(kernel_ms) if i not in layer_set)
    return ShippedTimes(layer_ms, other, runs)
