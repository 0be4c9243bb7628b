"""The cortex-a78 target: aarch64 LLVM (NEON, dotprod, fp16), cross-compiled bundle, numerics under qemu."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_dir
from hanasc.core.errors import HanascError
from hanasc.targets import aarch64_runtime, aarch64_tools, bundle, bundle_readme, host
from hanasc.targets.base import Choices, CostFacts
from hanasc.targets.quiet import export_library
from hanasc.targets.tvm_family import LlvmCpuTarget

TARGET_JSON = {
    "kind": "llvm",
    "mtriple": "aarch64-linux-gnu",
    "mcpu": "cortex-a78",
    "mattr": ["+neon", "+dotprod", "+fullfp16"],
}
TARGET = LlvmCpuTarget(
    name="cortex-a78",
    aliases=("a78", "arm"),
    description="Arm Cortex-A78 (aarch64, NEON, dotprod, fp16): cross-compiled library + C++ runner",
    tvm_target_json=TARGET_JSON,
    choices=Choices(compute_weight_bits=(32, 16, 8), storage_weight_bits=(4, 2), act_bits=(32, 16, 8)),
    cost=CostFacts("tvm-llvm", "cpu", cross_cc="aarch64-linux-gnu-g++", prior_lowering="shipped"),
    builder="hanasc.targets.cortex_a78:build_bundle",
    checked_here="cross build; numerics under qemu-aarch64 vs the host build; NEON/sdot in the code",
    checked_on_device="latency",
    kernel_notes=(
        "int8 convs (groups=1): sdot kernels, 4 output x 4 input channels a step; int8 "
        "depthwise: NEON code widened to int32; fp16: half precision arithmetic compiled with "
        "+fullfp16; 4/2-bit: unpacked to int8 in the graph"
    ),
)
TARGETS = (TARGET,)
# Output agreement with the host build: max |a78 - host| <= RTOL * max(1, max |host|).
RTOL = 1e-4

_VECTOR_OPERAND = re.compile(r"\bv\d+\.(?:16b|8b|8h|4h|4s|2s|2d|1d|b|h|s|d)\b|\bq\d+\b")


def tvm_target():
    import tvm

    return tvm.target.Target(TARGET_JSON)


def export(executable, path: Path) -> None:
    """Cross-link the compiled module into an aarch64 shared library."""
    export_library(executable, path, fcompile=aarch64_tools.cross_compiler())


def simd_counts(disassembly: str) -> dict[str, int]:
    """Instruction counts in aarch64 disassembly: NEON (vector operands), fmla, sdot/udot, fp16 arithmetic."""
    counts = {
        "instructions": 0,
        "neon": 0,
        "fmla_vector": 0,
        "sdot": 0,
        "udot": 0,
        "fp16_vector": 0,
        "fp16_scalar": 0,
    }
    for line in disassembly.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().endswith(":"):
            continue
        mnemonic, operands = parts[2].strip(), parts[3] if len(parts) > 3 else ""
        counts["instructions"] += 1
        if _VECTOR_OPERAND.search(operands):
            counts["neon"] += 1
            counts["fmla_vector"] += mnemonic == "fmla"
            counts["fp16_vector"] += bool(re.search(r"\.(?:8h|4h)\b", operands)) and mnemonic.startswith("f")
        elif mnemonic.startswith("f") and re.match(r"h\d+\b", operands.strip()):
            counts["fp16_scalar"] += 1
        counts["sdot"] += mnemonic == "sdot"
        counts["udot"] += mnemonic == "udot"
    return counts


def kernel_simd_counts(disassembly: str) -> dict[str, dict[str, int]]:
    """:func:`simd_counts` per function of an ``objdump -d`` listing (``<symbol>:`` headers)."""
    functions: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in disassembly.splitlines():
        header = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line.strip())
        if header:
            lines = functions.setdefault(header.group(1), [])
        else:
            lines.append(line)
    return {name: simd_counts("\n".join(body)) for name, body in functions.items()}


def build_bundle(mod, out_dir: Path, probe_inputs: list[np.ndarray] | dict) -> bundle.BundleReport:
    """Cross-compile ``mod`` (weights bound, or as parameters: integer weights then stay packed in the
    library) into a self-contained aarch64 bundle in ``out_dir``."""
    import tvm

    from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

    probe_inputs = bundle.as_list(probe_inputs)
    runtime = aarch64_runtime.require()
    aarch64_tools.require_tool(aarch64_tools.CXX)
    start = time.perf_counter()
    runner = aarch64_tools.build_runner(runtime)
    reference = host.run(host.build_artifact(mod), probe_inputs)
    compile_start = time.perf_counter()
    executable = compile_late_bound(mod, tvm_target())
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # a bundle is copied to a device: readable by others, like any build output
        export(executable, tmp / "model.so")
        compile_seconds = time.perf_counter() - compile_start
        shutil.copy2(runner, tmp / "runner")
        (tmp / "rt").mkdir()
        for lib in aarch64_runtime.CPU_LIBS:
            shutil.copy2(runtime / lib, tmp / "rt" / lib)
        manifest = {
            "format": "hanasc.bundle/1",
            "target": TARGET.name,
            "tvm_target": str(tvm_target()),
            "tvm_version": tvm.__version__,
            "device": "cpu",
            "contents": {
                "model.so": "the compiled model (aarch64 shared library, TVM Relax VM executable)",
                "runner": "C++ runner (aarch64, links rt/ through RPATH $ORIGIN/rt)",
                "rt/": "TVM runtime for aarch64: libtvm_runtime.so, libtvm_ffi.so (the build's version)",
                "probe_input.bin": "a probe input (raw float32)",
                "probe_output.bin": "the host build's output for the probe input",
                "bundle.json": "this bundle's manifest (shapes, dtypes, target)",
            },
            **bundle.write_probe(tmp, probe_inputs, reference),
        }
        bundle.write_manifest(tmp, manifest)
        (tmp / "README.md").write_text(bundle_readme.render(manifest, _device_setup()))
        simd = simd_counts(aarch64_tools.disassemble(tmp / "model.so"))
    return bundle.BundleReport(
        target=TARGET.name,
        out_dir=out_dir,
        files=bundle.file_sizes(out_dir),
        build_seconds=time.perf_counter() - start,
        checks={"compile_seconds": round(compile_seconds, 2), "simd": simd},
        notes=["numerics can be checked here under qemu (check_under_qemu); latency only on the device"],
    )


def _device_setup() -> list[str]:
    return [
        "Copy this folder to the device (any aarch64 Linux with glibc >= 2.28 and libstdc++; "
        "a Cortex-A78 or any Armv8.2-A core with dotprod and fp16).",
        "Nothing to install: `runner` finds `rt/` through its RPATH (`$ORIGIN/rt`).",
        "Pin the clock governor to `performance` and stop other load before timing.",
    ]


@dataclass
class RunnerResult:
    """One run of the bundle's runner: its outputs and what it printed."""

    outputs: list[np.ndarray]
    stdout: str

    @property
    def latency_line(self) -> str:
        return next((ln for ln in self.stdout.splitlines() if ln.startswith("latency_ms ")), "")


def run_under_qemu(bundle_dir: Path, runs: int = 1, warmup: int = 0, timeout: float = 600) -> RunnerResult:
    """Run the bundle's runner on its probe input under qemu-aarch64 (emulated: its timings mean nothing)."""
    bundle_dir = Path(bundle_dir)
    manifest = bundle.read_manifest(bundle_dir)
    qemu = aarch64_tools.qemu_command()
    inputs = bundle.tensor_specs(manifest["inputs"])
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.bin"
        cmd = [
            *qemu,
            "./runner",
            "./model.so",
            "--output",
            str(out),
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
        ]
        for spec in inputs:
            cmd += ["--input", f"{spec.file}:{spec.shape_arg}"]
        done = subprocess.run(cmd, cwd=bundle_dir, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise HanascError(
                f"runner under qemu failed: {(done.stderr.strip() or done.stdout.strip())[-300:]}"
            )
        outputs = bundle.split_outputs(out.read_bytes(), bundle.tensor_specs(manifest["outputs"]))
    return RunnerResult(outputs, done.stdout)


def check_under_qemu(bundle_dir: Path) -> tuple[list[np.ndarray], float]:
    """Run the bundle under qemu; return its outputs and the max abs difference from the host reference."""
    result = run_under_qemu(bundle_dir)
    return result.outputs, bundle.max_abs_diff(result.outputs, bundle.probe_reference(Path(bundle_dir)))


def conv_simd_counts(dtype: str = "int8", channels: int = 64, size: int = 14) -> dict[str, int]:
    """Compile one 3x3 conv2d in ``dtype`` (int8 accumulates in int32) for the A78 as a model's layer ships
    (its weight a late-bound parameter, hanasc's pipeline) and count its SIMD use."""
    import tvm
    from tvm import relax

    from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

    rng = np.random.default_rng(0)
    weight = rng.integers(-128, 127, (channels, channels, 3, 3)).astype(dtype)
    out_dtype = "int32" if dtype == "int8" else dtype
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, channels, size, size), dtype))
    w = relax.Var("w", relax.TensorType(weight.shape, dtype))
    with bb.function("main", [x, w], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1, out_dtype=out_dtype))
        bb.emit_func_output(y)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("params", [tvm.runtime.tensor(weight)])
    with tempfile.TemporaryDirectory() as scratch:
        lib = Path(scratch) / f"conv_{dtype}.so"
        export(compile_late_bound(mod, tvm_target()), lib)
        return simd_counts(aarch64_tools.disassemble(lib))
