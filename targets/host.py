"""The host target: x86-64 (or whatever CPU this is) through TVM's LLVM backend; built and run here."""

from __future__ import annotations

import os

import numpy as np

from hanasc.targets.base import Capabilities, Choices
from hanasc.targets.isa import (
    depthwise_vpermb,
    has_feature,
    supports_pair_kernels,
    supports_quad_depthwise,
    supports_vnni,
)
from hanasc.targets.tvm_family import LlvmCpuTarget

TARGET = LlvmCpuTarget(
    name="host",
    description="this machine's CPU through TVM's LLVM backend (mcpu detected at build time)",
    tvm_target_json={"kind": "llvm"},
    tvm_target_from="hanasc.targets.host:tvm_target",
    # No native fp16 arithmetic on x86 here: fp16 weights are stored and cast back to fp32.
    choices=Choices(compute_weight_bits=(32, 8), storage_weight_bits=(16, 4, 2), act_bits=(32, 8)),
    builder="hanasc.targets.host_bundle:build_bundle",
    caps=Capabilities(runs_here=True),
    checked_here="everything: build, run, measure",
    kernel_notes_from="hanasc.targets.host:kernel_paths",
)
TARGETS = (TARGET,)


def tvm_target():
    """The TVM target for this machine's CPU (mcpu detected; num-cores for MetaSchedule)."""
    import tvm

    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": os.cpu_count() or 1,
        }
    )


def build(mod, target=None):
    """Compile a Relax module (weights bound or as inputs) with the fused default pipeline."""
    import tvm
    from tvm import relax

    target = target or tvm_target()
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def build_artifact(mod, target=None):
    """Compile a hanasc module (weights as parameters) into a deployable executable for this CPU.

    Integer weights (int8, and 4/2-bit packed in uint8) are bound only after fusion, so the library stores
    them as they are (:mod:`hanasc.targets.late_binding`); float weights are folded as usual.
    """
    from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

    return compile_late_bound(mod, target or tvm_target())


def run(executable, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``main`` once on the CPU and return its outputs as numpy arrays."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    return flatten_outputs(result)


def flatten_outputs(result) -> list[np.ndarray]:
    """A VM result (tensor or nested tuple of tensors) as a flat list of numpy arrays."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    out: list[np.ndarray] = []
    for item in result:
        out.extend(flatten_outputs(item))
    return out


def kernel_paths() -> str:
    """How the host computes each precision, read from this CPU (for `hanasc targets`)."""
    target = tvm_target()
    if supports_vnni(target):
        int8 = (
            "int8 convolutions (1x1 and KxK) and classifiers (x @ W): exact vpdpbusd kernels (AVX512-VNNI, "
            "4 channels a lane), on codes + 128 where the input can be negative (a per-channel constant "
            "corrects the sum; padded convs on signed codes: vpdpwssd int16 pairs); "
            + (
                "depthwise int8 convs in 16-channel blocks: 512-bit vpdpbusd on four taps of a kernel row a "
                + (
                    "lane, transposed by vpermb (AVX512-VBMI)"
                    if depthwise_vpermb(target)
                    else "lane, transposed by vpermd + vpshufb"
                )
                + "; other depthwise int8 convs and convs under 8 input channels: int32-widened vector code"
                if supports_quad_depthwise(target)
                else "depthwise int8 convs and convs under 8 input channels: int32-widened vector code"
            )
        )
    elif supports_pair_kernels(target):
        int8 = (
            "int8 convolutions (1x1 and KxK) and classifiers (x @ W): exact vpmaddubsw kernels (4 channels "
            "a lane) where the input is a ReLU's, exact vpmaddwd int16-pair kernels otherwise (AVX2); "
            "depthwise int8 convs and convs under 8 input channels: int32-widened vector code"
        )
    else:
        int8 = "int8: int32-widened vector code (no AVX2 pair kernels on this CPU)"
    if supports_pair_kernels(target):
        int8 += "; 4/2-bit weights of those kernels stay packed and are unpacked in registers inside them"
    half = "16-bit weights: stored as fp16, computed in fp32 (no native fp16 arithmetic here"
    if has_feature(target, "avx512bf16"):  # see docs/performance.md, "16-bit compute on x86"
        half += (
            "; this CPU's AVX512-BF16 vdpbf16ps is not reachable: TVM 0.27's LLVM codegen has no bfloat16 "
            "type, so its legalization computes every bf16 value in fp32"
        )
    return f"{int8}; {half})"
