"""One convolution kernel in three CPU layouts, each tuned with the same MetaSchedule budget.

    python bench/bench_kernel_layouts.py --trials 32 --runs 50

For MobileNetV2-style kernels (conv + bias + ReLU6): NCHW (the imported layout), NCHW with weight
prepacking (MetaSchedule layout rewrite), NHWC, and NCHW16c (``hanasc.targets.lowering.blocked_layout``), each
tuned from an empty database with ``--trials`` trials, and NCHW16c / NCHW8c with hanasc's default
schedule (``+rule``: ``cpu_schedules.BlockedConv``, no tuning), then timed (median of ``--runs``,
1 thread) beside onnxruntime running the same kernel as a one-node ONNX model. This is how the layout
and the default schedules of hanasc's CPU pipeline were chosen.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

KERNELS = {  # name: (cin, cout, hw, k, stride, groups)
    "pw 24->144 @56": (24, 144, 56, 1, 1, 1),
    "dw 3x3 s2 96 @112": (96, 96, 112, 3, 2, 96),
    "dw 3x3 144 @56": (144, 144, 56, 3, 1, 144),
    "pw 144->32 @28": (144, 32, 28, 1, 1, 1),
    "pw 96->576 @14": (96, 576, 14, 1, 1, 1),
    "dw 3x3 576 @14": (576, 576, 14, 3, 1, 576),
    "pw 576->96 @14": (576, 96, 14, 1, 1, 1),
}
LAYOUTS = ("NCHW", "NCHW+prepack", "NHWC", "NCHW16c", "NCHW16c+prepack", "NCHW16c+rule", "NCHW8c+rule")


def weights(cin: int, cout: int, k: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin // groups, k, k)) / np.sqrt(cin // groups * k * k)).astype("float32")
    return w, rng.standard_normal(cout).astype("float32")


def relax_kernel(layout: str, cin: int, cout: int, hw: int, k: int, stride: int, groups: int):
    """conv + bias + clip(0, 6) with constant weights, the input already in ``layout``."""
    from tvm import relax

    w, b = weights(cin, cout, k, groups)
    if layout.split("+")[0] == "NCHW":
        shape, kernel_layout, wv, bv = (1, cin, hw, hw), "OIHW", w, b.reshape(1, cout, 1, 1)
    elif layout == "NHWC":
        shape, kernel_layout = (1, hw, hw, cin), "OHWI"
        wv, bv = w.transpose(0, 2, 3, 1), b.reshape(1, 1, 1, cout)
    else:
        c = int(layout.split("+")[0][4:-1])  # NCHW{c}c
        shape, kernel_layout = (1, cin // c, hw, hw, c), f"OIHW1i{c}o"
        wv = w.reshape(cout // c, c, cin // groups, k, k).transpose(0, 2, 3, 4, 1)[:, :, :, :, None, :]
        bv = b.reshape(1, cout // c, 1, 1, c)
    data_layout = layout.split("+")[0]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x,
                    relax.const(np.ascontiguousarray(wv)),
                    strides=stride,
                    padding=k // 2,
                    groups=groups,
                    data_layout=data_layout,
                    kernel_layout=kernel_layout,
                )
            )
            y = bb.emit(relax.op.add(y, relax.const(bv)))
            out = bb.emit_output(relax.op.minimum(relax.op.maximum(y, relax.const(0.0)), relax.const(6.0)))
        bb.emit_func_output(out)
    return bb.get(), shape


def onnx_kernel(cin: int, cout: int, hw: int, k: int, stride: int, groups: int) -> onnx.ModelProto:
    w, b = weights(cin, cout, k, groups)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], strides=[stride] * 2, pads=[k // 2] * 4, group=groups
        ),
        helper.make_node("Clip", ["y", "lo", "hi"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(0.0, "float32"), "lo"),
        numpy_helper.from_array(np.array(6.0, "float32"), "hi"),
    ]
    out_hw = (hw - 1) // stride + 1
    graph = helper.make_graph(
        nodes,
        "kernel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, cout, out_hw, out_hw])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def median_ms(call, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per kernel")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kernels", nargs="*", default=list(KERNELS))
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS))
    args = parser.parse_args()
    import tvm
    from tvm import relax

    from hanasc.targets import host, pipelines, tuning

    tvm.get_global_func("runtime.config_threadpool")(1, 1)
    target = host.tvm_target()
    rows = []
    for name in args.kernels:
        spec = KERNELS[name]
        cin, cout, hw, k, stride, groups = spec
        gflop = 2 * cout * (cin // groups) * k * k * ((hw - 1) // stride + 1) ** 2 / 1e9
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            onnx_kernel(*spec).SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        x_nchw = np.random.default_rng(1).standard_normal((1, cin, hw, hw)).astype("float32")
        ort_ms = median_ms(lambda sess=sess, x=x_nchw: sess.run(None, {"x": x}), args.runs)
        rows.append((name, "onnxruntime (NCHW)", ort_ms, gflop, 0.0))
        print(f"{name}: onnxruntime {ort_ms:.3f} ms", flush=True)
        for layout in args.layouts:
            block = int(layout.split("+")[0][4:-1]) if layout.endswith("c") or "c+" in layout else 1
            if cin % block or cout % block:
                continue  # a network keeps such tensors in NCHW
            mod, shape = relax_kernel(layout, *spec)
            if layout.endswith("rule"):  # hanasc's default schedule (cpu_schedules.BlockedConv), no tuning
                with target:
                    executable = tvm.compile(
                        mod, target=target, relax_pipeline=pipelines.tuned_pipeline(target, database=False)
                    )
                summary, seconds = "default schedule, not tuned", 0.0
            else:  # the module is already in its layout: tuned as it is
                options = tuning.TuningOptions(
                    trials_per_task=args.trials,
                    trials_per_iter=16,
                    layout_rewrite=layout.endswith("prepack"),
                    blocked=False,
                    tune_scheduled=True,
                )
                with tempfile.TemporaryDirectory() as db:
                    built = tuning.tune_and_build(mod, target, minutes=60, db_dir=Path(db), options=options)
                executable, summary, seconds = built.executable, built.summary(), built.tuning_seconds
            vm = relax.VirtualMachine(executable, tvm.cpu())
            arg = tvm.runtime.tensor(np.random.default_rng(1).standard_normal(shape).astype("float32"))
            ms = median_ms(lambda vm=vm, arg=arg: vm["main"](arg), args.runs)
            rows.append((name, layout, ms, gflop, seconds))
            print(f"{name}: {layout} {ms:.3f} ms ({summary})", flush=True)
    print(
        f"\n1 thread, median of {args.runs} runs, {args.trials} MetaSchedule trials per kernel and layout\n"
    )
    print("| kernel | engine / layout | ms | vs onnxruntime | GFLOP/s | tuning s |")
    print("|---|---|---|---|---|---|")
    ort_by_kernel = {r[0]: r[2] for r in rows if r[1].startswith("onnxruntime")}
    for name, layout, ms, gflop, secs in rows:
        print(
            f"| {name} | {layout} | {ms:.3f} | {ms / ort_by_kernel[name]:.2f}x | {gflop / ms * 1e3:.1f} "
            f"| {secs:.0f} |"
        )


if __name__ == "__main__":
    main()
