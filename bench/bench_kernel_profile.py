"""Where the time goes: hanasc's kernels against onnxruntime's own per-node profile, fp32 and int8.

    python bench/bench_kernel_profile.py [--runs 20] [--top 15] [MODEL.onnx]

For one model (default EfficientNet-Lite0 with its ImageNet weights), 1 thread: hanasc fp32 and uniform
W8A8 artifacts timed kernel by kernel (the VM's instrument hook, median of ``--runs``), grouped by kind
(stem, depthwise, pointwise, other conv, dense, layout transform, other), beside onnxruntime fp32 and
int8 (``quantize_static``, as ``bench_precision.py``) profiled with ``SessionOptions.enable_profiling``
and grouped by op type. Kernel medians of an instrumented run add up to more than the whole-model time
(the hook's own cost), so compare kinds within one engine column, and whole models with
``bench_precision.py``. Prints the CPU's ISA first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_precision import foolbox_images, isa_line, ort_engines, set_tvm_threads, table


def kernel_signatures(mod) -> dict[str, list[tuple[int, ...]]]:
    """Buffer shapes of every PrimFunc's parameters, by kernel name (from the printed signature)."""
    from tvm import tirx

    shapes = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        text = func.script()
        head = text[text.index("def ") : text.index("):", text.index("def ")) + 2].replace("T.int64(", "(")
        found = re.findall(r"T\.Buffer\(\((.*?)\), \"(\w+)\"", head)
        shapes[gv.name_hint] = [
            tuple(int(d) for d in re.sub(r"[() ]", "", dims).split(",") if d) for dims, _ in found
        ]
    return shapes


def kernel_kind(name: str, shapes: list[tuple[int, ...]]) -> str:
    """stem / depthwise / pointwise / conv / dense / layout / other, from the kernel's name and weight."""
    if "matmul" in name or "dense" in name:
        return "dense"
    if "layout_transform" in name:
        return "layout"
    if "conv2d" not in name:
        return "other"
    weight = shapes[1] if len(shapes) > 1 else ()
    if "oblocked" in name or (len(weight) >= 2 and weight[1] == 3 and len(weight) == 4):
        return "stem (NCHW)"
    if len(weight) >= 4 and weight[1] == 1 and weight[2] > 1:
        return "depthwise"
    if len(weight) >= 4 and weight[1 if "int_" in name else 2] == 1:
        return "pointwise"
    return "conv"


def hanasc_profile(model, config, ranges, x: np.ndarray, runs: int) -> tuple[dict, list, float]:
    """(ms by kind, [(ms, kernel, kind)], whole-model median ms) of the host artifact for ``config``."""
    import tvm
    from tvm import relax

    from hanasc.cost_models.timing import kernel_call_times
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.targets import host, pipelines

    captured = {}
    original = pipelines.unscheduled_kernels

    def capture(mod):
        captured["mod"] = mod
        return original(mod)

    pipelines.unscheduled_kernels = capture
    try:
        executable = host.build_artifact(materialize_recovered(model, config, ranges))
    finally:
        pipelines.unscheduled_kernels = original
    shapes = kernel_signatures(captured["mod"])
    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(x)
    whole = []
    for _ in range(runs + 3):
        start = time.perf_counter()
        vm["main"](arg)
        whole.append((time.perf_counter() - start) * 1e3)
    timed = kernel_call_times(vm, [arg], runs)
    if timed is None:
        raise SystemExit("the artifact's kernel call sequence changes between runs")
    rows = []
    by_kind: dict[str, float] = defaultdict(float)
    for name, ms in zip(*timed, strict=True):
        kind = kernel_kind(name, shapes.get(name, []))
        by_kind[kind] += ms
        rows.append((ms, name, kind))
    return dict(by_kind), sorted(rows, reverse=True), statistics.median(whole[3:])


def ort_profile(path: Path, x: np.ndarray, runs: int, work: Path) -> tuple[dict, list]:
    """(ms by op type, [(ms, node, op)]) of onnxruntime's own profile, 1 thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"ort-{path.stem}")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(runs + 3):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[(event["name"][: -len("_kernel_time")], event["args"]["op_name"])].append(
                event["dur"] / 1e3
            )
    by_op: dict[str, float] = defaultdict(float)
    rows = []
    for (node, op), values in times.items():
        ms = statistics.median(values[3:] or values)
        by_op[op] += ms
        rows.append((ms, node, op))
    return dict(by_op), sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", nargs="?", type=Path, help="ONNX image classifier (default: EfficientNet-Lite0)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import hanasc
    from hanasc.frontend.calibration import calibrate
    from hanasc.frontend.model_zoo import fetch
    from hanasc.passes.config import Config, LayerChoice

    print(isa_line())
    set_tvm_threads(1)
    path = args.model or fetch("efficientnet-lite0")
    model = hanasc.load_model(path)
    images, _, calib = foolbox_images(model)
    x = images[:1]
    ranges = calibrate(model, calib, method="percentile", percentile=99.99)
    w8a8 = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ort_engines(path, images, calib, 1, work)  # writes the int8 model
        int8_path = work / f"{path.stem}.ort_int8.onnx"
        for label, config, ort_path in (("fp32", Config(), path), ("int8", w8a8, int8_path)):
            kinds, kernels, whole = hanasc_profile(model, config, ranges, x, args.runs)
            ops, nodes = ort_profile(ort_path, x, args.runs, work)
            print(f"\n## {path.stem} {label}, 1 thread, medians of {args.runs} runs\n")
            print(f"hanasc whole model (uninstrumented): {whole:.2f} ms; onnxruntime nodes sum to "
                  f"{sum(ops.values()):.2f} ms\n")  # fmt: skip
            print(
                table(
                    [(k, f"{v:.2f}") for k, v in sorted(kinds.items(), key=lambda t: -t[1])],
                    ("hanasc kind", "ms"),
                )
            )
            print()
            print(
                table(
                    [(k, f"{v:.2f}") for k, v in sorted(ops.items(), key=lambda t: -t[1])],
                    ("onnxruntime op", "ms"),
                )
            )
            print(f"\nslowest {args.top} hanasc kernels:\n")
            print(
                table(
                    [(f"{ms:.3f}", kind, name[:90]) for ms, name, kind in kernels[: args.top]],
                    ("ms", "kind", "kernel"),
                )
            )
            print(f"\nslowest {args.top} onnxruntime nodes:\n")
            print(
                table(
                    [(f"{ms:.3f}", op, node[:90]) for ms, node, op in nodes[: args.top]], ("ms", "op", "node")
                )
            )


if __name__ == "__main__":
    main()
