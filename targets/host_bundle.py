"""The host target's bundle: the exported x86 library, a small Python runner script, probe input/output."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_dir
from hanasc.targets import bundle, bundle_readme, host
from hanasc.targets.quiet import export_library

RUNNER_SCRIPT = '''\
"""Run model.so (hanasc host bundle) on the probe input with TVM; print the max abs diff and the latency."""

import json
import sys
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

here = Path(__file__).resolve().parent
manifest = json.loads((here / "bundle.json").read_text())
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
dev = tvm.cpu()
vm = relax.VirtualMachine(tvm.runtime.load_module(str(here / "model.so")), dev)
args = [
    tvm.runtime.tensor(np.fromfile(here / s["file"], np.float32).reshape(s["shape"]), dev)
    for s in manifest["inputs"]
]
result = vm["main"](*args)
flat, stack = [], [result]
while stack:
    item = stack.pop(0)
    if hasattr(item, "numpy"):
        flat.append(item.numpy())
    else:
        stack[:0] = list(item)
raw = (here / manifest["probe_output"]).read_bytes()
offset, diff = 0, 0.0
for out, spec in zip(flat, manifest["outputs"]):
    ref = np.frombuffer(raw, spec["dtype"], out.size, offset).reshape(out.shape)
    offset += ref.nbytes
    diff = max(diff, float(np.max(np.abs(out.astype(np.float64) - ref))) if out.size else 0.0)
    print(f"output {out.dtype} {'x'.join(map(str, out.shape))}")
print(f"max_abs_diff {diff:.3g}")
times = vm.time_evaluator("main", dev, number=1, repeat=runs)(*args).results
ms = sorted(t * 1e3 for t in times)
print(f"latency_ms median={float(np.median(ms)):.4f} min={ms[0]:.4f} max={ms[-1]:.4f} runs={runs} device=cpu")
'''


def build_bundle(
    mod, out_dir: Path, probe_inputs: list[np.ndarray] | dict, executable=None
) -> bundle.BundleReport:
    """Build ``mod`` (weights bound, or as parameters: integer weights stay packed) for this CPU, or ship
    ``executable``, its build for this CPU already made; the bundle runs here with ``python run.py``."""
    import tvm

    probe_inputs = bundle.as_list(probe_inputs)
    start = time.perf_counter()
    target = host.tvm_target()
    if executable is None:
        executable = host.build_artifact(mod, target)
    reference = host.run(executable, probe_inputs)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # a bundle is copied to a device: readable by others, like any build output
        export_library(executable, tmp / "model.so")
        (tmp / "run.py").write_text(RUNNER_SCRIPT)
        manifest = {
            "format": "hanasc.bundle/1",
            "target": host.TARGET.name,
            "tvm_target": str(target),
            "tvm_version": tvm.__version__,
            "device": "cpu",
            "contents": {
                "model.so": "the compiled model (shared library for this CPU, TVM Relax VM executable)",
                "run.py": "runner: python run.py [RUNS] (needs the same apache-tvm installed)",
                "probe_input.bin": "a probe input (raw float32)",
                "probe_output.bin": "this build's output for the probe input",
                "bundle.json": "this bundle's manifest (shapes, dtypes, target)",
            },
            **bundle.write_probe(tmp, probe_inputs, reference),
        }
        bundle.write_manifest(tmp, manifest)
        setup = [f"Use this machine (or one with the same CPU features) with apache-tvm {tvm.__version__}."]
        command = "python run.py 50   # prints outputs, max_abs_diff vs probe_output.bin, latency_ms"
        (tmp / "README.md").write_text(bundle_readme.render(manifest, setup, command, runner_usage=False))
    return bundle.BundleReport(
        target=host.TARGET.name,
        out_dir=out_dir,
        files=bundle.file_sizes(out_dir),
        build_seconds=time.perf_counter() - start,
        notes=["runs and is measured on this machine"],
    )
