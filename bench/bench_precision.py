"""Does a layer with fewer bits run faster? hanasc's precisions against onnxruntime and OpenVINO, one run.

    python bench/bench_precision.py --runs 30 [--threads 1,2] [--monotonicity 50] [MODEL.onnx ...]

Per model (EfficientNet-Lite0 with its ImageNet weights, a MobileNetV2 with random weights, and any ONNX path
given), for 1 and 2 threads, medians of ``--runs`` interleaved runs in one process:

- onnxruntime fp32 and int8 (``quantize_static``: QDQ, per-channel, u8 activations / s8 weights);
  both engines built by ``hanasc.compile.peers``, as the compile's ``--compare`` builds them;
- OpenVINO CPU fp32 and int8 (``nncf.quantize``, default preset), f32 inference precision (OpenVINO's
  default on a bf16-capable CPU is bf16);
- hanasc fp32 (the artifact ``hanasc apply`` builds for an empty Config), uniform W8A8, W4A8 and W2A8
  (packed weights), and fp16 where the host computes it natively.

Calibration: 10 of foolbox's 20 labelled ImageNet images (the same for every engine); top-1 is on all 20,
agreement is top-1 agreement with the same engine family's fp32 on the 20 images (hanasc against hanasc
fp32, which equals onnxruntime's fp32 to 1e-5). ``--monotonicity N`` also builds N models with a single layer
at W8A8 (the rest fp32) and counts the layers that make the whole model slower than fp32 beyond the noise
(the spread of fp32's own runs). Prints the CPU's ISA flags first: ratios only hold on the same CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ISA_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
)


def isa_line() -> str:
    """The CPU model and the ISA extensions that decide int8 / fp16 speed."""
    from hanasc.cost_models.profiler import local_device_id

    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    have = [f for f in ISA_FLAGS if f in flags]
    return (
        f"CPU: {local_device_id()}; {os.cpu_count()} logical cores; ISA: {' '.join(have) or 'none of'} "
        + (f"(absent: {' '.join(f for f in ISA_FLAGS if f not in flags)})")
    )


@dataclass
class Engine:
    """One way to run a model: a callable for timing and the outputs on the evaluation images."""

    name: str
    call: Callable[[], object]
    outputs: np.ndarray
    family_fp32: str  # the engine whose outputs agreement is measured against


def foolbox_images(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all 20 images, their labels, the 10 calibration images), preprocessed as the demo does."""
    from hanasc.cli.compile_command import preprocess_for
    from hanasc.frontend.images import load_foolbox_imagenet

    ds, _ = load_foolbox_imagenet(preprocess_for(model, None, None, None, None, "RGB", 1))
    x = ds.x.astype(np.float32)
    calib = x[np.random.default_rng(0).permutation(len(x))[:10]]
    return x, ds.y, calib


def peer_engines(
    engine: str, path: Path, x: np.ndarray, calib: np.ndarray, threads: int, work: Path
) -> list[Engine]:
    """``engine``'s fp32 and int8 (:func:`hanasc.compile.peers.peers_of`, as the compile's comparison builds
    them) as Engines with their outputs on ``x``; raises when the engine cannot take the model."""
    from hanasc.compile.peers import Peer, peers_of

    engines = []
    peers = peers_of(engine, path, [[c[None]] for c in calib], threads, work)
    fp32 = peers[0].name
    for peer in peers:
        if not isinstance(peer, Peer):
            raise RuntimeError(f"{peer.name}: {peer.reason}")
        engines.append(Engine(peer.name, lambda p=peer: p.infer([x[:1]]), peer.outputs(x), fp32))
    return engines


def ort_engines(path: Path, x: np.ndarray, calib: np.ndarray, threads: int, work: Path) -> list[Engine]:
    """onnxruntime fp32 and int8 (``quantize_static``; the int8 model written to ``work``)."""
    return peer_engines("onnxruntime", path, x, calib, threads, work)


def openvino_engines(path: Path, x: np.ndarray, calib: np.ndarray, threads: int) -> list[Engine]:
    """OpenVINO CPU fp32 and int8 (``nncf.quantize``), both with f32 inference precision."""
    with tempfile.TemporaryDirectory() as tmp:
        return peer_engines("openvino", path, x, calib, threads, Path(tmp))


def hanasc_precisions() -> dict[str, tuple[int, int]]:
    """Uniform precisions the host offers: W8A8, W4A8, W2A8, and W16A16 where fp16 compute is native."""
    from hanasc.targets.registry import get_target

    c = get_target("host").choices
    weights = set(c.compute_weight_bits) | set(c.storage_weight_bits)
    wanted = {"W8A8": (8, 8), "W4A8": (4, 8), "W2A8": (2, 8), "fp16 (W16A16)": (16, 16)}
    return {
        label: (w, a)
        for label, (w, a) in wanted.items()
        if w in weights and a in c.act_bits and (w != 16 or 16 in c.compute_weight_bits)
    }


def hanasc_engines(model, x: np.ndarray, calib: np.ndarray) -> list[Engine]:
    """hanasc fp32 and uniform precisions, built as ``hanasc apply`` builds them for the host."""
    import tvm
    from tvm import relax

    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.targets import host

    ranges = calibrate(model, calib, method="percentile", percentile=99.99)
    configs = {"hanasc fp32": Config()}
    for label, (w, a) in hanasc_precisions().items():
        configs[f"hanasc {label}"] = Config(
            layers={layer.name: LayerChoice(w_bits=w, a_bits=a) for layer in model.layers}
        )
    engines = []
    for label, config in configs.items():
        executable = host.build_artifact(materialize_recovered(model, config, ranges))  # as compile ships
        vm = relax.VirtualMachine(executable, tvm.cpu())
        outs = np.concatenate([vm["main"](tvm.runtime.tensor(s[None])).numpy() for s in x])
        arg = tvm.runtime.tensor(x[:1])
        engines.append(Engine(label, lambda v=vm, a=arg: v["main"](a), outs, "hanasc fp32"))
    return engines


def set_tvm_threads(n: int) -> None:
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, n)


def interleaved(engines: list[Engine], runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """Each engine once per round, ``runs`` rounds (:func:`hanasc.cost_models.timing.round_robin`, the
    compile's loop): milliseconds per run, per engine."""
    from hanasc.compile.peers import call_timer
    from hanasc.cost_models.timing import round_robin

    for e in engines:
        for _ in range(warmup):
            e.call()
    samples = round_robin([call_timer(e.call) for e in engines], runs)
    return {e.name: times for e, times in zip(engines, samples, strict=True)}


def table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bench_model(name: str, path: Path, args, work: Path, labelled: bool) -> None:
    import hanasc

    model = hanasc.load_model(path)
    x, y, calib = foolbox_images(model)
    print(f"\n## {name} ({path})\n", flush=True)
    hanasc_list = hanasc_engines(model, x, calib)
    for threads in args.threads:
        set_tvm_threads(threads)
        engines = [
            *ort_engines(path, x, calib, threads, work),
            *openvino_engines(path, x, calib, threads),
            *hanasc_list,
        ]
        by_name = {e.name: e for e in engines}
        times = interleaved(engines, args.runs)
        ort_fp32 = statistics.median(times["onnxruntime fp32"])
        ort_int8 = statistics.median(times["onnxruntime int8"])
        own_fp32 = statistics.median(times["hanasc fp32"])
        rows = []
        for e in engines:
            ms = statistics.median(times[e.name])
            top1 = f"{(e.outputs.argmax(1) == y).mean():.2f}" if labelled else "n/a (random weights)"
            agree = (e.outputs.argmax(1) == by_name[e.family_fp32].outputs.argmax(1)).mean()
            rows.append(
                (e.name, f"{ms:.2f}", f"{ms / ort_fp32:.2f}x", f"{ms / ort_int8:.2f}x",
                 f"{ms / own_fp32:.2f}x", top1, f"{agree:.2f}")
            )  # fmt: skip
        print(f"threads {threads}, medians of {args.runs} interleaved runs:\n")
        header = ("engine", "ms", "vs ort fp32", "vs ort int8", "vs hanasc fp32", "top-1 (20)", "agreement")
        print(table(rows, header) + "\n", flush=True)
    if args.monotonicity:
        set_tvm_threads(1)
        monotonicity(model, calib, args)


def monotonicity(model, calib: np.ndarray, args) -> None:
    """Single-layer W8A8 models against fp32 (1 thread): how many make the whole model slower."""
    import tvm
    from tvm import relax

    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.targets import host

    ranges = calibrate(model, calib, method="percentile", percentile=99.99)
    arg = tvm.runtime.tensor(calib[:1])
    base_vm = relax.VirtualMachine(host.build_artifact(model.mod), tvm.cpu())
    layers = model.layers[: args.monotonicity]
    rows, violations = [], 0
    for layer in layers:
        one_layer = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8)})
        mod = materialize_recovered(model, one_layer, ranges)
        vm = relax.VirtualMachine(host.build_artifact(mod), tvm.cpu())
        engines = [
            Engine("fp32", lambda: base_vm["main"](arg), np.zeros(1), "fp32"),
            Engine("one", lambda v=vm: v["main"](arg), np.zeros(1), "fp32"),
        ]
        times = interleaved(engines, max(10, args.runs // 2))
        base, one = statistics.median(times["fp32"]), statistics.median(times["one"])
        noise = np.percentile(times["fp32"], 75) - np.percentile(times["fp32"], 25)
        slower = one - base > noise
        violations += slower
        rows.append((layer.name, layer.op, f"{base:.3f}", f"{one:.3f}", f"{one - base:+.3f}", f"{noise:.3f}",
                     "SLOWER" if slower else ""))  # fmt: skip
        print(f"  {layer.name}: {one - base:+.3f} ms", file=sys.stderr, flush=True)
    print("per-layer monotonicity (one layer W8A8, the rest fp32; 1 thread; noise = IQR of fp32 runs):\n")
    header = ("layer", "op", "fp32 ms", "one layer W8A8 ms", "delta", "noise", "")
    print(table(rows, header))
    print(f"\n{violations} of {len(layers)} layers make the model slower at W8A8 beyond the noise (goal 0)\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", type=Path, help="extra ONNX models (3x224x224 image input)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    parser.add_argument("--monotonicity", type=int, default=0, help="layers to check (0: skip)")
    parser.add_argument("--skip-builtin", action="store_true", help="only the models given")
    args = parser.parse_args()

    from bench_tuned import export_mobilenet_v2

    from hanasc.frontend.model_zoo import fetch

    print(isa_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = [] if args.skip_builtin else [
            ("EfficientNet-Lite0 (ImageNet weights)", fetch("efficientnet-lite0"), True),
            ("MobileNetV2 (random weights)", export_mobilenet_v2(work), False),
        ]  # fmt: skip
        models += [(p.stem, p, True) for p in args.models]
        for name, path, labelled in models:
            bench_model(name, path, args, work, labelled)


if __name__ == "__main__":
    main()
