"""The user's runtime as the yardstick (``--compare``): the original model under onnxruntime and OpenVINO,
fp32 and int8 (:mod:`hanasc.compile.peers`, calibrated on the compile's calibration split), timed
alternately with the result's artifact on this machine and scored on the held-out split with the compile's
metric and floor; the report's ``compare`` section.

Timing reuses the compile's machinery (:func:`hanasc.cost_models.timing.round_robin`): every round runs the
result and each peer once, in turn, so all of them see the same phases of a shared machine, and the
result's ratio to a peer is the median of the per-round ratios. The peers run on as many threads as TVM's
runtime uses for the result. Where the result does not run on this machine (another target, or a device
over RPC) the section says why it is absent.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from hanasc.compile.context import RunContext
from hanasc.compile.peers import ENGINES, LABELS, Peer, PeerFailure, one_line, peers_of
from hanasc.compile.verify import _held_out_accuracy
from hanasc.cost_models.profiler import Session
from hanasc.cost_models.provenance import figure
from hanasc.cost_models.timing import executable_timer, median_ratio, round_robin
from hanasc.search.selection import AccuracyFloor

MIN_ROUNDS = 30  # interleaved rounds at least (peers are cheap to time; the compile's own repeats if more)
RATIO_MEANING = (
    "the result's latency / this engine's: the median over the interleaved rounds of the per-round ratio "
    "(below 1: the result is faster)"
)


def tvm_threads() -> int:
    """The thread count TVM's runtime runs the result with (``TVM_NUM_THREADS``, else its default)."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def why_absent(run: RunContext, executable) -> str | None:
    """Why the comparison is not made for this run (one line), or None when it is."""
    if run.options.compare == ():
        return "not compared: --compare none"
    measurer = run.info.measurer(run.session)
    if measurer is None:
        return f"not timed: the result runs on {run.info.name}, the peers here run on the host CPU"
    if not measurer.local:
        return (
            f"not timed: the result is measured on {run.info.name} over TVM RPC ({run.options.rpc}), "
            "the peers here run on the host CPU"
        )
    if executable is None:
        return "not timed: no host library of the result to time beside the peers"
    return None


def compare_section(run: RunContext, verified: dict, floor: AccuracyFloor) -> dict:
    """The report's ``compare`` section for the result (``verified``: its figures, with its host
    ``executable``): one row per engine and precision, or why it is absent."""
    absent = why_absent(run, verified.get("executable"))
    if absent is not None:
        run.stage.log(f"comparison with other runtimes: {absent}")
        return {"absent": absent}
    engines = run.options.compare or ENGINES
    threads = tvm_threads()
    rounds = max(MIN_ROUNDS, run.options.measure_repeats)
    calib = run.split.calib_x
    run.stage.log(
        f"comparing with {', '.join(LABELS[e] for e in engines)} fp32 and int8 of the original (quantized on "
        f"the calibration split), timed alternately with the result: {rounds} rounds, {threads} thread(s)"
    )
    shapes = {s.name: tuple(s.shape) for s in run.model.inputs}
    with tempfile.TemporaryDirectory(prefix="peers-", dir=run.work) as tmp:
        peers = [
            p
            for engine in engines
            for p in peers_of(engine, run.model.path, [[c[None]] for c in calib], threads, Path(tmp), shapes)
        ]
        scored = [_scored(run, p, floor) for p in peers]
        running = [(p, row) for p, row in zip(peers, scored, strict=True) if "failed" not in row]
        timers = [executable_timer(verified["executable"], run.probe)]
        timers += [p.timer(run.probe) for p, _ in running]
        samples = round_robin(timers, rounds)
    provenance = f"measured here: {rounds} interleaved runs, median, {threads} thread{'s' * (threads != 1)}"
    where = f"host ({Session.local().device_id})"
    for index, (_, row) in enumerate(running, 1):
        row["ms"] = _ms(samples[index], where, rounds, threads, "the result and the other engines")
        row["provenance"] = provenance
        row["ratio"] = round(median_ratio(samples[0], samples[index]), 3)
    result = {
        "engine": "hanasc",
        "precision": "the result",
        "name": "hanasc (the result)",
        "ms": _ms(samples[0], where, rounds, threads, ", ".join(p.name for p, _ in running) or "nothing"),
        "metric": verified["accuracy"],
        "provenance": provenance,
    }
    return {
        "engines": list(engines),
        "threads": threads,
        "rounds": rounds,
        "calibration": f"the compile's calibration split ({len(calib)} samples; each quantizer's own method)",
        "held_out": f"the compile's held-out split ({len(run.split.eval_x)} samples), {run.metric.name}",
        "ratio_meaning": RATIO_MEANING,
        "result": result,
        "rows": scored,
        "summary": summary(scored),
    }


def _scored(run: RunContext, peer: Peer | PeerFailure, floor: AccuracyFloor) -> dict:
    """A peer's row with its held-out metric and whether it keeps the compile's floor; a peer that fails on
    the held-out samples becomes a failed row."""
    row: dict = {"engine": peer.engine, "precision": peer.precision, "name": peer.name}
    if isinstance(peer, PeerFailure):
        return {**row, "failed": peer.reason}
    try:
        outputs = peer.outputs(run.split.eval_x)
        score, accuracy = _held_out_accuracy(run, outputs, f"{peer.name} on the original model")
    except Exception as exc:  # an engine failing on the model is a row saying so, not a crash
        return {**row, "failed": one_line(exc)}
    return {**row, "how": peer.how, "metric": accuracy, "within_floor": floor.kept(score)}


def _ms(samples: list[float], where: str, rounds: int, threads: int, beside: str) -> dict:
    return figure(
        round(statistics.median(samples), 3),
        "ms",
        "measured",
        where=where,
        runs=rounds,
        statistic="median",
        threads=threads,
        interleaved_with=beside,
        spread_ms=[round(min(samples), 3), round(max(samples), 3)],
    )


def summary(rows: list[dict]) -> str:
    """The result against each int8 peer, e.g. ``0.85 of onnxruntime int8, 0.93 of OpenVINO int8``."""
    parts = []
    for row in rows:
        if row["precision"] != "int8":
            continue
        name = row["name"]
        if "failed" in row:
            parts.append(f"{name} failed ({row['failed']})")
        else:
            parts.append(f"{row['ratio']:.2f} of {name} ({row['ms']['value']} ms)")
    return ", ".join(parts)
