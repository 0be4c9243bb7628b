"""What the Cortex-A78 code uses: NEON, vector fmla and sdot, per kernel and layout (no device needed).

    python bench/bench_a78_codegen.py

Speed on the A78 can only be measured on a device (MetaSchedule tuning over ``--rpc``); what can be
checked here is the generated code. Each MobileNetV2-style kernel (fp32 conv + bias + ReLU6, and an
int8 x int8 -> int32 conv) is compiled for the A78 (``+neon,+dotprod,+fullfp16``) by TVM's default pipeline
(constant weights) and as hanasc ships it (``late_binding.compile_late_bound``: blocked layout, default
schedules, ``sdot`` kernels, int8 weights late-bound), cross-linked, disassembled with
``aarch64-linux-gnu-objdump``, and its instructions counted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_kernel_layouts import KERNELS, relax_kernel


def int8_kernel(cin: int, cout: int, hw: int, k: int, stride: int, groups: int, late_bound: bool = False):
    """An int8 conv accumulating in int32 (what the quantize pass emits for an int8 layer); ``late_bound``:
    its weight a parameter with its value in the ``params`` attribute, as a quantized model's layers ship."""
    import tvm
    from tvm import relax

    w = np.random.default_rng(0).integers(-127, 128, (cout, cin // groups, k, k)).astype("int8")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, hw, hw), "int8"))
    weight = relax.Var("w", relax.TensorType(w.shape, "int8")) if late_bound else relax.const(w)
    params = [x, weight] if late_bound else [x]
    with bb.function("main", params, attrs={"num_input": 1} if late_bound else None):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(
                x, weight, strides=stride, padding=k // 2, groups=groups, out_dtype="int32"
            )
            out = bb.emit_output(conv)
        bb.emit_func_output(out)
    mod = bb.get()
    if late_bound:
        mod["main"] = mod["main"].with_attr("params", [tvm.runtime.tensor(w)])
    return mod


def counts(mod, pipeline: str) -> dict[str, int]:
    """Instruction counts of ``mod`` built for the A78 by TVM's default pipeline or hanasc's."""
    import tvm
    from tvm import relax

    from hanasc.targets import aarch64_tools, cortex_a78
    from hanasc.targets.late_binding import compile_late_bound

    target = cortex_a78.tvm_target()
    if pipeline == "tvm-default":
        executable = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    else:  # what ships: hanasc's pipeline with late-bound weights
        executable = compile_late_bound(mod, target)
    with tempfile.TemporaryDirectory() as scratch:
        lib = Path(scratch) / "kernel.so"
        cortex_a78.export(executable, lib)
        return cortex_a78.simd_counts(aarch64_tools.disassemble(lib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", nargs="*", default=[k for k in KERNELS if "24" not in k])
    args = parser.parse_args()
    print("| kernel | dtype | pipeline | instructions | NEON share | vector fmla | sdot |")
    print("|---|---|---|---|---|---|---|")
    for name in args.kernels:
        spec = KERNELS[name]
        fp32 = relax_kernel("NCHW", *spec)[0]
        for dtype, mods in (("fp32", (fp32, fp32)), ("int8", (int8_kernel(*spec), int8_kernel(*spec, True)))):
            for pipeline, mod in zip(("tvm-default", "hanasc"), mods, strict=True):
                c = counts(mod, pipeline)
                share = 100 * c["neon"] / max(1, c["instructions"])
                print(
                    f"| {name} | {dtype} | {pipeline} | {c['instructions']} | {share:.0f}% "
                    f"| {c['fmla_vector']} | {c['sdot']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
