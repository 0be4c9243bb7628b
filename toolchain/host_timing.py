"""Latency of host artifacts, measured so that a machine whose speed drifts (a shared VM, a throttling
laptop) cannot decide the outcome: models compared with each other are timed in one loop, alternately,
and a candidate is reported relative to the original timed beside it.

A single block of runs per model is not enough on such a machine: two blocks taken a minute apart can
differ by 30 % for the same artifact, which is more than the gap between fp32 and int8 kernels. Timing the
models round-robin puts every one of them in the same phases; a per-round ratio (candidate / original)
cancels the phase even within the loop.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hanasc.cost_models.provenance import figure

_TOOL = "TVM VirtualMachine.time_evaluator"


def _where() -> str:
    from hanasc.cost_models.profiler import Session

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
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    timers = []
    for executable in executables:
        vm = relax.VirtualMachine(executable, dev)
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=dev) for x in inputs]
        vm["main"](*args)  # warm-up: first-call allocations and page faults stay out of the samples
        timers.append(_timer(vm.time_evaluator("main", dev, number=1, repeat=1), args))
    return round_robin(timers, rounds)


def _timer(evaluator, args: list) -> Callable[[], float]:
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
            from hanasc.targets import host

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
