"""The jetson-orin pipeline at fp32, fp16 (W16A16) and int8 (W8A8): what its kernels use, and on a GPU, speed.

    python bench/bench_gpu.py [--runs 50] [MODEL.onnx ...]

Per model (EfficientNet-Lite0 with its ImageNet weights, and any ONNX path given) and precision, built with
the pipeline of the Orin bundle (:func:`hanasc.targets.late_binding.compile_late_bound`):

- always (no GPU needed): the sm_87 build, its kernels (how many run ``dp4a``, tensor-core ``wmma``, the
  one-thread-per-output small reduction), ptxas's largest register count and shared memory;
- where this machine has a CUDA GPU: the same pipeline built for that GPU's architecture, its outputs on the
  foolbox images against the host build of the same precision (max abs difference, top-1 agreement) and
  the median latency of ``--runs`` calls (one ``main`` plus a synchronize).

Prints the CPU's ISA and the GPU (or that there is none) first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRECISIONS = {"fp32": None, "fp16 (W16A16)": (16, 16), "int8 (W8A8)": (8, 8)}


def configs(model) -> dict:
    """The precision label -> Config of every layer at that precision (fp32: the empty Config)."""
    from hanasc.passes.config import Config, LayerChoice

    return {
        label: Config(layers={layer.name: LayerChoice(w_bits=p[0], a_bits=p[1]) for layer in model.layers})
        if p
        else Config()
        for label, p in PRECISIONS.items()
    }


def kernel_counts(source: str) -> dict[str, int]:
    """Kernels of a CUDA source, how many are convs / matmuls, and how many use dp4a and wmma tensor cores."""
    from hanasc.targets.cuda_kernels import kernel_bodies

    kernels = kernel_bodies(source)
    return {
        "kernels": len(kernels),
        "dp4a": sum("__dp4a(" in b for b in kernels.values()),
        "wmma": sum("wmma::mma_sync" in b for b in kernels.values()),
        "conv/matmul": sum(name.startswith(("fused_conv", "fused_matmul")) for name in kernels),
    }


def offline_row(label: str, mod, work: Path) -> tuple:
    """Build for sm_87; count the kernels' instructions; assemble with ptxas and read its limits."""
    from hanasc.targets import cuda_kernels, jetson_orin
    from hanasc.targets.late_binding import compile_late_bound

    start = time.perf_counter()
    executable = compile_late_bound(mod, jetson_orin.tvm_target())
    seconds = time.perf_counter() - start
    source = cuda_kernels.find_cuda_module(executable).inspect_source()
    with jetson_orin.tvm_target():
        ptx = cuda_kernels.compile_ptx(source, jetson_orin.ARCH)
    (work / "k.ptx").write_text(ptx)
    report = cuda_kernels.assemble_cubin(work / "k.ptx", work / "k.cubin", jetson_orin.ARCH)
    check = cuda_kernels.check_kernels(source, ptx, report, jetson_orin.ARCH)
    counts = kernel_counts(source)
    regs = max((k.registers for k in check.kernels), default=0)
    return (
        label, f"{seconds:.1f}", counts["kernels"], counts["conv/matmul"], counts["dp4a"], counts["wmma"],
        ptx.count("dp4a.s32"), regs, check.max_static_smem, "; ".join(check.problems) or "none",
    )  # fmt: skip


def gpu_row(label: str, mod, x: np.ndarray, reference: np.ndarray, runs: int) -> tuple:
    """Build for this machine's GPU, run the images, compare with the host build, time ``runs`` calls."""
    from hanasc.targets import jetson_orin

    executable = jetson_orin.build_for_local_gpu(mod)
    outputs = np.concatenate([jetson_orin.run_on_local_gpu(executable, [s[None]], runs=1)[0][0] for s in x])
    _, ms = jetson_orin.run_on_local_gpu(executable, [x[:1]], runs=runs)
    diff = float(np.abs(outputs - reference).max())
    agree = float((outputs.argmax(1) == reference.argmax(1)).mean())
    return label, f"{ms:.3f}", f"{diff:.2e}", f"{agree:.2f}"


def bench_model(name: str, path: Path, args, work: Path) -> None:
    from bench_precision import foolbox_images, table

    import hanasc
    from hanasc.compile.verify import run_host
    from hanasc.frontend.calibration import calibrate
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.targets import host, jetson_orin

    model = hanasc.load_model(path)
    x, _, calib = foolbox_images(model)
    ranges = calibrate(model, calib, method="percentile", percentile=99.99)
    mods = {label: materialize_recovered(model, c, ranges) for label, c in configs(model).items()}
    print(f"\n## {name} ({path})\n", flush=True)
    rows = [offline_row(label, mod, work) for label, mod in mods.items()]
    header = ("precision", "build s", "kernels", "conv/matmul", "dp4a kernels", "wmma kernels",
              "dp4a in PTX", "max regs", "max smem B", "limit problems")  # fmt: skip
    print("jetson-orin (sm_87), built offline:\n\n" + table(rows, header) + "\n", flush=True)
    if not jetson_orin.local_gpu_available():
        print("no CUDA GPU on this machine: outputs and latency on a GPU not measured\n")
        return
    rows = [
        gpu_row(label, mod, x, run_host(host.build_artifact(mod), x), args.runs)
        for label, mod in mods.items()
    ]
    fp32_ms = float(rows[0][1])
    rows = [(*r, f"{float(r[1]) / fp32_ms:.2f}x") for r in rows]
    print(f"this GPU, medians of {args.runs} runs; outputs against the host build of the same precision:\n")
    print(table(rows, ("precision", "ms", "max abs diff", "top-1 agreement", "vs fp32")) + "\n")


def gpu_line() -> str:
    from hanasc.targets import jetson_orin

    if not jetson_orin.local_gpu_available():
        return "GPU: none"
    import tvm

    dev = tvm.cuda(0)
    return f"GPU: {dev.device_name} (compute capability {dev.compute_version})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", type=Path, help="extra ONNX models (3x224x224 image input)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip-builtin", action="store_true", help="only the models given")
    args = parser.parse_args()

    from bench_precision import isa_line

    from hanasc.frontend.model_zoo import fetch

    print(isa_line())
    print(gpu_line())
    models = (
        [] if args.skip_builtin else [("EfficientNet-Lite0 (ImageNet weights)", fetch("efficientnet-lite0"))]
    )
    models += [(p.stem, p) for p in args.models]
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models:
            bench_model(name, path, args, Path(tmp))


if __name__ == "__main__":
    main()
