"""ONNX fuzzing: mutate the fixture models and count what `hanasc inspect/apply/compile` do with them.

Fixtures: the two onnx.helper models of fuzzing.onnx_fuzz (residual add + depthwise conv + Gemm; conv + BN +
MaxPool + MatMul) and, when torch is installed, the torch-exported test models of tests/builders.py.
Every mutant goes through inspect; every --apply-every-th one inspect accepts through apply (empty
Config), every --compile-every-th through compile (host, 1 generation of 4). Prints the counts table
(and --json FILE writes the failures); exits 1 when any call ended in a traceback, hang, partial output
or other.

Usage: python bench/fuzz.py [--count 1000] [--seed 0] [--timeout 30] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent / "tests")
)  # the harness lives in tests/fuzzing

from fuzzing.fuzz_fixtures import builtin_fixtures
from fuzzing.fuzz_runner import FuzzCalls, report_json, run_fuzz


def torch_fixtures(folder: Path) -> dict[str, onnx.ModelProto]:
    """The torch test models (raw exports, BatchNorm included), when torch is installed."""
    try:
        from builders import TORCH_MODELS, export_torch_model
    except ImportError:
        return {}
    return {name: onnx.load(export_torch_model(name, folder)) for name in TORCH_MODELS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="mutated models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="s per inspect (apply 2x, compile 4x)")
    parser.add_argument("--apply-every", type=int, default=5)
    parser.add_argument("--compile-every", type=int, default=25)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep every mutant, not only the failing ones")
    parser.add_argument("--json", type=Path, default=None, help="write counts and failures here")
    parser.add_argument("--no-torch", action="store_true", help="only the onnx.helper fixtures")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hanasc-fuzz-"))
    fixtures = builtin_fixtures()
    if not args.no_torch:
        (workdir / "fixtures").mkdir(parents=True, exist_ok=True)
        fixtures.update(torch_fixtures(workdir / "fixtures"))
    print(f"fixtures: {', '.join(sorted(fixtures))}; mutants in {workdir}", flush=True)
    started = time.monotonic()

    def progress(done: int, report) -> None:
        if done % 50 == 0 or done == args.count:
            elapsed = time.monotonic() - started
            print(f"  {done}/{args.count} mutants, {elapsed:.0f} s, {report.bad()} bad calls", flush=True)

    report = run_fuzz(
        fixtures,
        args.count,
        args.seed,
        workdir,
        FuzzCalls(args.timeout, args.apply_every, args.compile_every, args.keep),
        progress=progress,
    )
    print(f"\n{report.mutants} mutants, seed {args.seed}, {report.seconds:.0f} s\n")
    print(report.table())
    print("\nrejections by mutator: " + ", ".join(f"{k} {v}" for k, v in sorted(report.rejections.items())))
    print("\none rejection per mutator:")
    for mutator, example in sorted(report.examples.items()):
        print(f"  {mutator}: {example[:400]}")
    for failure in report.failures[:40]:
        print(
            f"- {failure['command']} {failure['outcome']}: {failure['fixture']} / {failure['mutation']}: "
            f"{failure['note'][:300]} ({failure['path']})"
        )
    if args.json:
        args.json.write_text(report_json(report, args.count, args.seed))
    return 1 if report.bad() else 0


if __name__ == "__main__":
    sys.exit(main())
