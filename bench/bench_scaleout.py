"""The verification-build stage in-process vs on 2 local Ray workers (docs/scale-out.md).

Builds the same candidate modules (uniform precisions of one model, materialized with recovery on random
calibration data) as the compile's verification walk builds them (``hanasc.compile.verify_builds``'s work
unit), once through the in-process executor and once through a local Ray with ``--workers`` CPUs, and
prints the wall time of the stage (median of ``--runs``, Ray's start excluded and printed apart) and each
build's duration. Every figure is measured on this machine; the CPU and its ISA are printed first.

    nice -n 10 python3 bench/bench_scaleout.py                      # EfficientNet-Lite0 (the demo model)
    nice -n 10 python3 bench/bench_scaleout.py --model m.onnx --candidates 2 --runs 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def candidate_units(model_arg: str, count: int) -> list:
    """Build work units of ``count`` uniform-precision candidates of the model (the original first, then
    one per precision the host offers, every layer alike)."""
    import tvm

    import hanasc
    from hanasc.compile.pipeline import _space_options
    from hanasc.compile.verify_builds import build_library
    from hanasc.core.executor import WorkUnit, content_key
    from hanasc.frontend.calibration import calibrate
    from hanasc.frontend.model_zoo import resolve_model_arg
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.search.seeds import uniform_genomes
    from hanasc.search.space import build_space
    from hanasc.targets import host
    from hanasc.targets.registry import get_target

    model = hanasc.load_model(resolve_model_arg(model_arg))
    info = get_target("host")
    x = np.random.default_rng(0).standard_normal((8, *model.inputs[0].shape[1:])).astype(np.float32)
    ranges = info.shipped_ranges(calibrate(model, x, method="percentile", percentile=99.99))
    space = build_space(model, _space_options(info, "quant"))
    genomes = uniform_genomes(space)
    target = str(host.tvm_target())
    units = []
    for i, genome in enumerate(genomes[:count]):
        mod_json = tvm.ir.save_json(materialize_recovered(model, space.decode(genome), ranges))
        units.append(WorkUnit(content_key(mod_json, target), build_library, (mod_json, target), f"cand {i}"))
    return units


def timed_stage(executor, units) -> float:
    started = time.perf_counter()
    executor.map(units)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0", help="ONNX file or zoo name")
    parser.add_argument("--candidates", type=int, default=2, help="builds in the stage (default 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of each executor; the median is printed")
    args = parser.parse_args()

    from bench_precision import isa_line

    from hanasc.core.executor import InProcessExecutor, RayExecutor

    print(isa_line())
    units = candidate_units(args.model, args.candidates)
    print(f"model {args.model}: {len(units)} candidate builds (uniform precisions, recovered)")
    inproc = [timed_stage(InProcessExecutor(), units) for _ in range(args.runs)]
    started = time.perf_counter()
    with RayExecutor(workers=args.workers) as ray_executor:
        ray_start = time.perf_counter() - started
        timed_stage(ray_executor, units[:1])  # warm-up: each worker's first task imports TVM and hanasc
        spread = [timed_stage(ray_executor, units) for _ in range(args.runs)]
    a, b = statistics.median(inproc), statistics.median(spread)
    print(f"verification-build stage, measured on this machine, median of {args.runs} runs:")
    print(f"  in-process:               {a:7.1f} s   (runs: {', '.join(f'{t:.1f}' for t in inproc)})")
    print(
        f"  {args.workers} local Ray workers:   {b:7.1f} s   (runs: {', '.join(f'{t:.1f}' for t in spread)}; "
        f"Ray start {ray_start:.1f} s and one warm-up build not counted)"
    )
    print(f"  ratio workers / in-process: {b / a:.2f}x (goal <= 0.6x at 2 workers)")


if __name__ == "__main__":
    main()
