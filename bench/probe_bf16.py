"""Can TVM reach AVX512-BF16's ``vdpbf16ps``? The blocker of bf16 compute on x86, reproduced.

    python bench/probe_bf16.py

Builds, in a child process each (a crash must not end the probe), a TIR kernel of 64 pixels x 128 input
channel pairs x 16 output channels that calls ``llvm.x86.avx512bf16.dpbf16ps.512`` on bfloat16 operands:

- ``legalized``: TVM's own pipeline. Its ``BF16ComputeLegalize`` computes every bfloat16 value in fp32, so
  the operands reach LLVM as ``<32 x float>`` and the module fails LLVM's verifier.
- ``raw``: the same pipeline with the two bf16 legalizations replaced by no-ops, so the operands keep
  their type; and a plain fp32 -> bf16 cast kernel the same way. With TVM 0.27 both end in a segfault in
  the compiler: its LLVM codegen has no bfloat16 type.

Where a case builds (a later TVM), the line counts ``vdpbf16ps`` in the kernel's assembly: the first
step towards bf16 pair kernels beside the int8 ones (:mod:`hanasc.targets.x86_int8`). Prints the CPU's
ISA, the TVM and LLVM versions and one line per case.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CASES = ("legalized", "raw", "raw-cast")

_CHILD = r"""
import sys
import numpy as np
import tvm
from tvm.script import tirx as T

case = sys.argv[1]
if case.startswith("raw"):
    import tvm.tirx.transform as tt
    noop = tt.prim_func_pass(lambda f, m, c: f, opt_level=0, name="keep_bf16")
    tt.BF16ComputeLegalize = lambda: noop
    tt.BF16StorageLegalize = lambda: noop
P, K = 64, 128
if case == "raw-cast":
    @T.prim_func(s_tir=True)
    def kernel(A: T.Buffer((64,), "float32"), B: T.Buffer((64,), "bfloat16")):
        for i in range(64):
            with T.sblock("b"):
                vi = T.axis.remap("S", [i])
                B[vi] = T.cast(A[vi], "bfloat16")
else:
    @T.prim_func(s_tir=True)
    def kernel(A: T.Buffer((P, K, 2), "bfloat16"), W: T.Buffer((K, 16, 2), "bfloat16"),
               C: T.Buffer((P, 16), "float32")):
        for p in range(P):
            with T.sblock("init"):
                vp = T.axis.remap("S", [p])
                T.writes(C[vp, 0:16])
                C[vp, T.ramp(0, 1, 16)] = T.broadcast(T.float32(0), 16)
            for k in range(K):
                with T.sblock("dot"):
                    vp, vk = T.axis.remap("SR", [p, k])
                    T.reads(A[vp, vk, 0:2], W[vk, 0:16, 0:2], C[vp, 0:16])
                    T.writes(C[vp, 0:16])
                    C[vp, T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx512bf16.dpbf16ps.512"),
                        C.vload([vp, 0], "float32x16"),
                        T.reinterpret(T.broadcast(T.reinterpret(A.vload([vp, vk, 0], "bfloat16x2"),
                                                                dtype="int32"), 16), dtype="bfloat16x32"),
                        W.vload([vk, 0, 0], "bfloat16x32"),
                        dtype="float32x16",
                    )
try:
    lib = tvm.compile(kernel, target=tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}))
except Exception as exc:
    print("build failed: " + " ".join(str(exc).split())[:200])
    sys.exit(0)
print(f"built; vdpbf16ps in assembly: {lib.mod.inspect_source('asm').count('vdpbf16ps')}")
"""


def run_case(case: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:  # TVMScript reads the kernel's source file
        script = Path(tmp) / "bf16_kernel.py"
        script.write_text(_CHILD)
        command = [sys.executable, str(script), case]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        segfault = done.returncode in (-11, 139) or "Segfault" in done.stderr
        return f"crashed (exit {done.returncode}{': segfault in the compiler' if segfault else ''})"
    return lines[-1] if lines else "no output"


def main() -> None:
    import tvm
    from bench_precision import isa_line

    print(isa_line())
    print(f"TVM {tvm.__version__}, LLVM {tvm.target.codegen.llvm_version_major()}")
    for case in CASES:
        print(f"{case:<10} {run_case(case)}", flush=True)


if __name__ == "__main__":
    main()
