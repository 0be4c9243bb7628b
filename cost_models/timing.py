"""Timing, in one place: how hanasc measures latency where it can run a model.

**Side by side.** Latency of host artifacts, measured so that a machine whose speed drifts (a shared VM,
a throttling laptop) cannot decide the outcome: models compared with each other are timed in one loop,
alternately, and a candidate is reported relative to the original timed beside it.

A single block of runs per model is not enough on such a machine: two blocks taken a minute apart can
differ by 30 % for the same artifact, which is more than the gap between fp32 and int8 kernels. Timing the
models round-robin puts every one of them in the same phases; a per-round ratio (candidate / original)
cancels the phase even within the loop.

**Per layer.** Per-layer times of a shipped artifact: each searchable layer's kernel timed inside the
whole model.

The VM's instrument hook sees every kernel call in execution order. The kernels that compute a layer
(their names hold ``conv2d``, ``matmul`` or ``dense``) are matched to the layer table in order; everything
else (layout transforms, pooling, unfused adds, quantize kernels of the input) is "other". When the
counts do not match (a pipeline that splits or merges layers), no per-layer figure is given and the
search keeps its kernel-profile estimates.

**Whole models.** Whole-model measurements: build a module for the target, run ``main`` repeatedly,
keep the median.

Kernel calls are timed in place by :func:`call_samples` (the VM instrument hook).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hanasc.core.relax_params import input_count
from hanasc.cost_models.profiler import Session
from hanasc.cost_models.provenance import figure
from hanasc.cost_models.target_info import get_target
from hanasc.targets import host
from hanasc.targets.late_binding import compile_late_bound


def call_samples(
    vm, args: list, runs: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[list[str], list[list[float]]] | None:
    """``(kernel names in call order, seconds of each call over the runs)`` of ``vm["main"](*args)``, after
    one uninstrumented warm-up (VM builtins are not kernels); None when the call sequence changes between
    runs (a data-dependent pipeline)."""
    calls: list[str] = []
    started: list[float] = []
    samples: dict[int, list[float]] = defaultdict(list)

    def instrument(func, name, before_run, ret, *call_args):
        if name.startswith("vm.builtin"):
            return 0
        if before_run:
            calls.append(name)
            started.append(clock())
        else:
            samples[len(calls) - 1].append(clock() - started[-1])
        return 0

    vm["main"](*args)  # warm-up, uninstrumented
    vm.set_instrument(instrument)
    order: list[str] = []
    for _ in range(runs):
        calls.clear()
        started.clear()
        vm["main"](*args)
        order = order or list(calls)
        if calls != order:
            return None
    return order, [samples[i] for i in range(len(order))]


def single_thread() -> bool:
    """True when TVM's runner uses one thread: its kernels then run on the calling thread, whose CPU time
    leaves out the time slices other processes take."""
    return os.environ.get("TVM_NUM_THREADS") == "1"


_TOOL = "TVM VirtualMachine.time_evaluator"


def _where() -> str:
    return f"host ({Session.local().device_id})"


def measure_host(executable, inputs: list[np.ndarray], repeat: int) -> dict:
    """Median latency of ``main`` on this CPU (time_evaluator, 1 warm-up, ``repeat`` runs)."""
    samples = interleaved_samples([executable], inputs, repeat)[0]
    return _median_figure(samples, runs=repeat)


def _median_figure(samples: list[float], **detail) -> dict:
    return figure(
        round(statistics.median(samples), 3),
        "ms",
        "measured",
        where=_where(),
        statistic="median",
        spread_ms=[round(min(samples), 3), round(max(samples), 3)],
        tool=_TOOL,
        **detail,
    )


def interleaved_samples(executables: list, inputs: list[np.ndarray], rounds: int) -> list[list[float]]:
    """Per executable, ``rounds`` times in ms of ``main``; each round runs every executable once in turn
    (after one untimed warm-up run of each), so all of them see the same phases of the machine."""
    return round_robin([executable_timer(executable, inputs) for executable in executables], rounds)


def executable_timer(executable, inputs: list[np.ndarray]) -> Callable[[], float]:
    """A timer of one run of ``main`` on this CPU in ms (time_evaluator), after one untimed warm-up run
    (first-call allocations and page faults stay out of the samples); for :func:`round_robin`."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=dev) for x in inputs]
    vm["main"](*args)
    evaluator = vm.time_evaluator("main", dev, number=1, repeat=1)
    return lambda: float(evaluator(*args).results[0]) * 1e3


def round_robin(timers: list[Callable[[], float]], rounds: int) -> list[list[float]]:
    """Per timer, ``rounds`` samples; each round calls every timer once, in order."""
    samples: list[list[float]] = [[] for _ in timers]
    for _ in range(max(1, rounds)):
        for index, timer in enumerate(timers):
            samples[index].append(timer())
    return samples


def median_ratio(candidate: list[float], original: list[float]) -> float:
    """The median over rounds of candidate / original: a drift in the machine's speed that hits both runs of
    a round cancels, and the rounds a speed change falls between are outvoted."""
    return statistics.median(c / o for c, o in zip(candidate, original, strict=True))


def time_side_by_side(
    executables: list, labels: list[str], inputs: list[np.ndarray], rounds: int
) -> list[dict]:
    """The median latency figure of each executable, all timed in one interleaved loop."""
    samples = interleaved_samples(executables, inputs, rounds)
    figures = []
    for index, label in enumerate(labels):
        others = [other for other in labels if other != label]
        detail = {"interleaved_with": ", ".join(others)} if others else {}
        figures.append(_median_figure(samples[index], runs=rounds, **detail))
    return figures


@dataclass
class HostReference:
    """The original's host artifact and its reference latency (the figure the budgets were resolved
    against). ``executable`` is built on first use when the reference latency was read back (``--resume``)."""

    mod: object
    median_ms: float
    executable: object = None

    def built(self):
        if self.executable is None:
            self.executable = host.build_artifact(self.mod)
        return self.executable

    def measure_beside(self, executable, inputs: list[np.ndarray], rounds: int) -> dict:
        """``executable``'s latency timed round-robin with the original: the median of the per-round ratios
        candidate / original, times the original's reference latency. The raw median and the original's
        median in the same loop are kept in the figure."""
        candidate, original = interleaved_samples([executable, self.built()], inputs, rounds)
        ratio = median_ratio(candidate, original)
        return figure(
            round(ratio * self.median_ms, 3),
            "ms",
            "measured",
            where=_where(),
            runs=rounds,
            statistic=(
                "median ratio to the original, timed alternately with it in one loop, x the original's "
                "reference latency"
            ),
            ratio_to_original=round(ratio, 4),
            raw_median_ms=round(statistics.median(candidate), 3),
            original_in_loop_ms=round(statistics.median(original), 3),
            original_reference_ms=self.median_ms,
            tool=_TOOL,
        )


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


@dataclass(frozen=True)
class ModelTiming:
    median_ms: float
    spread: float  # (max - min) / median over repeats
    runs: int
    device: str


def module_hash(mod) -> str:
    """A stable id of a Relax module (structure and constants)."""
    import tvm_ffi

    return hashlib.sha256(str(tvm_ffi.structural_hash(mod)).encode()).hexdigest()[:24]


def build_for(mod, target_name: str):
    """Compile a whole module as hanasc ships it for the target (:func:`hanasc.targets.late_binding.
    compile_late_bound`: blocked layouts, default schedules, tuning records, integer weights bound late)."""
    return compile_late_bound(mod, get_target(target_name).tvm_target())


def random_inputs(mod, device=None) -> list:
    """Arguments for ``main``'s inputs (not its weight parameters): random normal floats, zeros otherwise
    (safe as indices), seeded, on ``device`` (default: the CPU)."""
    import tvm

    rng = np.random.default_rng(0)
    args = []
    for param in mod["main"].params[: input_count(mod)]:
        shape, dtype = tuple(int(d) for d in param.ty.shape), str(param.ty.dtype)
        value = rng.standard_normal(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(value, device=device or tvm.cpu()))
    return args


def measure_model(
    mod, target_name: str = "host", session: Session | None = None, repeat: int = 7
) -> ModelTiming:
    """Median end-to-end time of ``main`` (weights bound) on the session's device, inputs random: the model
    built for ``target_name``, timed by :func:`time_executable` (which also takes ``min_repeat_ms``)."""
    return time_executable(build_for(mod, target_name), mod, target_name, session, repeat)


def time_executable(
    executable,
    mod,
    target_name: str = "host",
    session: Session | None = None,
    repeat: int = 7,
    min_repeat_ms: float = 0.0,
) -> ModelTiming:
    """Median time of ``executable``'s ``main`` on the session's device (uploaded over RPC when remote).

    ``mod`` is the module it was built from: its inputs (not its weight parameters) give the shapes of the
    random arguments.
    """
    from tvm import relax

    target = get_target(target_name)
    session = session or Session.local()
    lib = session.load(executable, target)
    dev = session.device(target.device_type)
    vm = relax.VirtualMachine(lib, dev)
    args = random_inputs(mod, dev)
    vm["main"](*args)  # warm-up
    result = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=int(min_repeat_ms))(*args)
    samples = [float(s) * 1e3 for s in result.results]
    median = statistics.median(samples)
    return ModelTiming(median, (max(samples) - min(samples)) / median, repeat, session.device_id)


def time_executable_cpu(executable, mod, repeat: int = 7, min_repeat_ms: float = 20.0) -> ModelTiming:
    """Median CPU time of ``main`` on this machine's calling thread, for a single-threaded runner.

    With ``TVM_NUM_THREADS=1`` every kernel runs on the calling thread, so its CPU time is the model's
    execution time without the time slices other processes take on a shared machine (wall-clock timing
    there varies 2-3x). Each sample runs ``main`` until ``min_repeat_ms`` of CPU time has passed.
    """
    sample = cpu_time_sampler(executable, mod, min_repeat_ms)
    samples = [sample() for _ in range(repeat)]
    median = statistics.median(samples)
    return ModelTiming(median, (max(samples) - min(samples)) / median, repeat, "this CPU, thread CPU time")


def cpu_time_sampler(executable, mod, min_repeat_ms: float = 20.0):
    """A function returning one sample of :func:`time_executable_cpu` (ms per run of ``main``, thread CPU
    time over at least ``min_repeat_ms``), after one warm-up run: samplers of several models can be called
    in turn (:func:`hanasc.cost_models.timing.round_robin`) so that they share the machine's phases."""
    import os
    import time

    import tvm
    from tvm import relax

    if os.environ.get("TVM_NUM_THREADS") != "1":
        raise ValueError("thread CPU timing needs a single-threaded runner (TVM_NUM_THREADS=1)")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = random_inputs(mod)
    main = vm["main"]
    main(*args)  # warm-up

    def sample() -> float:
        start, runs = time.thread_time(), 0
        while True:
            main(*args)
            runs += 1
            elapsed = time.thread_time() - start
            if elapsed * 1e3 >= min_repeat_ms:
                return elapsed / runs * 1e3

    return sample
