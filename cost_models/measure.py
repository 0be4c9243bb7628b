"""Whole-model measurements: build a module for the target, run ``main`` repeatedly, keep the median."""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass

import numpy as np

from hanasc.cost_models.profiler import Session
from hanasc.cost_models.target_info import get_target


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
    from hanasc.targets.late_binding import compile_late_bound

    return compile_late_bound(mod, get_target(target_name).tvm_target())


def random_inputs(mod, device=None) -> list:
    """Arguments for ``main``'s inputs (not its weight parameters): random normal floats, zeros otherwise
    (safe as indices), seeded, on ``device`` (default: the CPU)."""
    import tvm

    from hanasc.relax_params import input_count

    rng = np.random.default_rng(0)
    args = []
    for param in mod["main"].params[: input_count(mod)]:
        shape, dtype = tuple(int(d) for d in param.ty.shape), str(param.ty.dtype)
        value = rng.standard_normal(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(value, device=device or tvm.cpu()))
    return args


def measure_model(
    mod,
    target_name: str = "host",
    session: Session | None = None,
    repeat: int = 7,
    min_repeat_ms: float = 0.0,
) -> ModelTiming:
    """Median end-to-end time of ``main`` (weights bound) on the session's device, inputs random."""
    return time_executable(build_for(mod, target_name), mod, target_name, session, repeat, min_repeat_ms)


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
    in turn (:func:`hanasc.host_timing.round_robin`) so that they share the machine's phases."""
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
