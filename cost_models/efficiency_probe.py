"""Measure kernel efficiencies on this machine through the shipped pipeline and fit the efficiency model.

    python bench/probe_efficiency.py [--layers 130] [--activations 40] [--out PATH]
    python bench/probe_efficiency.py --refit SAMPLES.jsonl --out PATH   # no new measurement

Probes are small Relax modules of one layer (``cost_models.sweep.layer_module``: conv / pointwise /
depthwise / dense, fp32 / int8 / fp16) or one activation op (add, pooling, mean). Each is built by
``hanasc.targets.host.build_artifact`` (what ``hanasc compile`` ships) and run under the VM's instrument
hook; each call is paired with the features of the same kernel as the prior sees it
(``kernels.lower_to_kernels(..., lowering="shipped")``: blocked layouts, int8 dot-product kernels, layout
transforms).
Runs with ``TVM_NUM_THREADS`` threads (the reference roof is one core x that many threads).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.cost_models.efficiency import EfficiencyModel, cache_path, fit
from hanasc.cost_models.kernels import KernelFeatures, lower_to_kernels
from hanasc.cost_models.network_profile import call_samples
from hanasc.cost_models.profiler import local_device_id
from hanasc.cost_models.spec import host_measurements
from hanasc.cost_models.sweep import LayerShape, layer_module
from hanasc.cost_models.target_info import get_target
from hanasc.passes.packing import packed_size, unpack_expr
from hanasc.targets import host

LAYOUT_PREFIXES = ("te_layout_transform", "layout_transform")
MAX_FLOPS = 4e8  # keep each probe well under a second


def runner_threads() -> int:
    """The thread count TVM's runtime uses here (``TVM_NUM_THREADS``, else every core)."""
    return int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)


def core_peak_fp32(n: int = 768, runs: int = 7) -> float:
    """Best single-thread float32 matmul rate of numpy's BLAS (FLOP/s): the reference core peak.

    Timed in CPU time of this thread (BLAS limited to one thread runs here), so other processes on a shared
    machine do not lower it."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    with threadpool_limits(1):
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(runs))
    return 2.0 * n**3 / best


def host_precision_ratios() -> dict[str, float]:
    """The host spec's peak ratios of fp16 and int8 to fp32 (efficiency is relative to each one's peak)."""
    import json

    return dict(json.loads(get_target("host").spec_path.read_text())["precision_ratio_to_fp32"])


def _timed(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def layer_probes(n: int, seed: int = 0) -> list[LayerShape]:
    """Random conv / pointwise / depthwise / dense layers of mobile-CNN sizes, under MAX_FLOPS each."""
    rng = random.Random(seed)
    out: list[LayerShape] = []
    while len(out) < n:
        kind = rng.choice(["conv", "pointwise", "pointwise", "depthwise", "dense"])
        dtype = rng.choice(["float32", "float32", "int8", "float16"])
        c = rng.choice([8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 576])
        hw = rng.choice([1, 2, 4, 7, 8, 14, 16, 28, 32, 56])
        stride = rng.choice([1, 1, 2]) if hw > 2 else 1
        if kind == "dense":
            cin, cout = c * rng.choice([1, 2, 4]), rng.choice([10, 64, 100, 1000])
            layer = LayerShape(cin, cout, 1, 1, dense=True, dtype=dtype)
        elif kind == "depthwise":
            layer = LayerShape(c, c, hw, hw, rng.choice([3, 5]), stride, groups=c, dtype=dtype)
        elif kind == "pointwise":
            cout = rng.choice([8, 16, 24, 32, 64, 96, 128, 192, 320, 576, 1280])
            layer = LayerShape(c, cout, hw, hw, 1, 1, dtype=dtype)
        else:
            cin = rng.choice([3, 8, 16, 32, 64])
            layer = LayerShape(cin, c, hw, hw, rng.choice([3, 3, 5]), stride, dtype=dtype)
        if _layer_flops(layer) <= MAX_FLOPS:
            out.append(layer)
    return out


def _layer_flops(layer: LayerShape) -> float:
    if layer.dense:
        return 2.0 * layer.cin * layer.cout
    ho = -(-layer.h // layer.stride)
    return 2.0 * layer.cout * (layer.cin // layer.groups) * layer.kernel**2 * ho * ho


def unpack_probe(bits: int, shape: tuple[int, ...]):
    """A module unpacking 4- or 2-bit weights at run time, as packed layers do (``passes.packing``)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((packed_size(int(np.prod(shape)), bits),), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(unpack_expr(x, bits, shape))
        bb.emit_func_output(out)
    return bb.get()


def unpack_probes(n: int, seed: int = 0) -> list[tuple[int, tuple[int, ...]]]:
    rng = random.Random(seed + 2)
    out = []
    for _ in range(n):
        c = rng.choice([16, 32, 64, 96, 144, 192, 320, 480, 1280])
        k = rng.choice([1, 1, 3, 5])
        cin = 1 if k > 1 and rng.random() < 0.5 else rng.choice([8, 16, 32, 64, 96, 192])
        out.append((rng.choice([4, 2]), (c, cin, k, k)))
    return out


def activation_probe(kind: str, c: int, hw: int, seed: int = 0):
    """A module of one activation op: ``add`` (two inputs + clip), ``maxpool``, ``avgpool`` or ``mean``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "float32"))
    rng = np.random.default_rng(seed)
    with bb.function("main", [x]):
        with bb.dataflow():
            if kind == "add":
                other = relax.const(rng.standard_normal((1, c, hw, hw)).astype("float32"))
                y = bb.emit(relax.op.clip(relax.op.add(x, other), 0.0, 6.0))
            elif kind == "maxpool":
                y = bb.emit(relax.op.nn.max_pool2d(x, (3, 3), (2, 2), (1, 1)))
            elif kind == "avgpool":
                y = bb.emit(relax.op.nn.avg_pool2d(x, (2, 2), (2, 2)))
            else:
                y = bb.emit(relax.op.mean(x, axis=[2, 3], keepdims=True))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def activation_probes(n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    rng = random.Random(seed + 1)
    return [
        (
            rng.choice(["add", "add", "maxpool", "avgpool", "mean"]),
            rng.choice([8, 16, 32, 64, 96, 144, 240, 480]),
            rng.choice([4, 7, 8, 14, 16, 28, 32, 56]),
        )
        for _ in range(n)
    ]


def shipped_calls(mod, runs: int = 15) -> tuple[list[str], list[list[float]]]:
    """Every kernel call of ``mod`` built by the shipped pipeline, in call order: (names, seconds per run)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(host.build_artifact(mod), tvm.cpu())
    # one runner thread: kernels run on this thread, whose CPU time ignores other processes' time slices
    clock = time.thread_time if runner_threads() == 1 else time.perf_counter
    param = mod["main"].params[0].ty
    x = tvm.runtime.tensor(np.zeros([int(d) for d in param.shape], str(param.dtype)))
    timed = call_samples(vm, [x], runs, clock)
    if timed is None:
        raise RuntimeError("the kernel call sequence changed between runs")
    return timed


def shipped_kernel_samples(mod, runs: int = 15) -> list[list[float]]:
    """Seconds of each non-layout kernel call of ``mod`` built by the shipped pipeline, in call order: one
    sample per run."""
    order, samples = shipped_calls(mod, runs)
    return [s for name, s in zip(order, samples, strict=True) if not name.startswith(LAYOUT_PREFIXES)]


def probe(mod) -> list[tuple[KernelFeatures, float]]:
    """(features, median seconds) of each kernel call of one probe module as the shipped build runs it
    (layout transforms included: the prior reads the same lowering), or [] when the calls do not match."""
    lowered = lower_to_kernels(mod, "host", "shipped")
    order, samples = shipped_calls(mod)
    if list(order) != list(lowered.call_order):
        return []
    by_name = {k.name: k for k in lowered.kernels}
    return [(by_name[name].features, statistics.median(s)) for name, s in zip(order, samples, strict=True)]


def measure_and_fit(
    n_layers: int = 120,
    n_activations: int = 40,
    seed: int = 0,
    progress=print,
    n_unpack: int = 20,
    add_to: tuple[list[tuple[KernelFeatures, float]], dict] | None = None,
    extra_modules: tuple[tuple[str, object], ...] = (),
) -> EfficiencyModel:
    """Probe this machine and fit the efficiency model (reference: one core's sgemm peak x threads).

    ``add_to``: (samples, reference) of an earlier run; the new samples are added to them.
    ``extra_modules``: more ``(label, module)`` probes (whole networks: ``bench/probe_efficiency.py``)."""
    import tvm

    threads = runner_threads()
    reference = (
        add_to[1]
        if add_to
        else {
            "device": local_device_id(),
            "fp32_core_peak": core_peak_fp32(),
            "bandwidth_Bps": host_measurements()["bandwidth_Bps"],
            "threads": threads,
            "precision_ratio_to_fp32": host_precision_ratios(),
            "how": "kernel time inside host.build_artifact libraries (VM instrument, median of 15 runs; "
            "thread CPU time with one runner thread) vs roofline at numpy single-thread sgemm peak x threads",
            "tvm_version": tvm.__version__,
            "fitted_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    samples: list[tuple[KernelFeatures, float]] = list(add_to[0]) if add_to else []
    modules = [
        (layer.label(), lambda layer=layer: layer_module(layer)) for layer in layer_probes(n_layers, seed)
    ]
    modules += [
        (f"{k} {c}@{hw}", lambda k=k, c=c, hw=hw: activation_probe(k, c, hw))
        for k, c, hw in activation_probes(n_activations, seed)
    ]
    modules += [
        (f"unpack{bits} {shape}", lambda bits=bits, shape=shape: unpack_probe(bits, shape))
        for bits, shape in unpack_probes(n_unpack, seed)
    ]
    modules += [(label, lambda mod=mod: mod) for label, mod in extra_modules]
    for i, (label, make) in enumerate(modules):
        try:
            pairs = probe(make())
        except Exception as exc:  # a shape the pipeline cannot build: skip it, say which
            progress(f"{i + 1:>4}/{len(modules)} {label}: skipped ({type(exc).__name__})")
            continue
        samples.extend(pairs)
        shown = ", ".join(f"{t * 1e6:.1f} us" for _, t in pairs[:8]) or "unpaired"
        shown += f" ... ({len(pairs)} kernels)" if len(pairs) > 8 else ""
        progress(f"{i + 1:>4}/{len(modules)} {label}: {shown}")
    model = fit(samples, {k: v for k, v in reference.items() if k != "samples"})
    _save_samples(samples, model)
    return model


def _save_samples(samples: list[tuple[KernelFeatures, float]], model: EfficiencyModel) -> None:
    """Keep the raw measurements beside the cache (a refit or an audit needs them, the prior does not)."""
    import json

    path = cache_path().with_name(f"efficiency-samples-{model.version}.jsonl")
    with atomic_file(path) as tmp:
        tmp.write_text(
            "".join(json.dumps({"features": f.to_json(), "seconds": t}) + "\n" for f, t in samples)
        )


def load_samples(samples_path: Path) -> list[tuple[KernelFeatures, float]]:
    import json

    rows = [json.loads(line) for line in Path(samples_path).read_text().splitlines() if line.strip()]
    return [(KernelFeatures.from_json(r["features"]), float(r["seconds"])) for r in rows]


def refit(samples_path: Path, reference: dict) -> EfficiencyModel:
    """Fit again from the raw samples a probe run kept (``efficiency-samples-<version>.jsonl``)."""
    samples = load_samples(samples_path)
    reference = {**reference, "refit_from": Path(samples_path).name}
    return fit(samples, {k: v for k, v in reference.items() if k != "samples"})
