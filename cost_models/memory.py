"""Memory: weight bytes at the module's real dtypes, peak activations from liveness over the VM's memory
plan, kernel workspace; and a check against the real artifact (.so size, peak RSS of a process running it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hanasc.cost_models.kernels import LoweredModel, allocated_bytes, with_bound_weights
from hanasc.cost_models.target_info import get_target
from hanasc.targets import host, pipelines
from hanasc.targets.late_binding import lower_as_shipped
from hanasc.targets.quiet import export_library


@dataclass(frozen=True)
class MemoryEstimate:
    weight_bytes: int  # weights as the module stores them (packed dtypes count at their size)
    weight_bytes_by_dtype: dict[str, int]
    activation_peak_bytes: int  # liveness over the VM's storage allocations (input and output included)
    activation_planned_bytes: int  # sum of every storage the static plan allocates
    workspace_bytes: int  # largest scratch a kernel allocates (pad buffers, unfused intermediates)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_peak_bytes + self.workspace_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}


def weight_bytes(mod) -> dict[str, int]:
    """Bytes of every weight by dtype: named weight parameters (``num_input`` attr) and bound constants."""
    import tvm
    from tvm import relax

    main = mod["main"]
    by_dtype: dict[str, int] = {}

    def add(shape, dtype) -> None:
        n = int(np.prod([int(d) for d in shape], dtype=np.int64)) * np.dtype(str(dtype)).itemsize
        by_dtype[str(dtype)] = by_dtype.get(str(dtype), 0) + n

    n_inputs = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
    for param in main.params[n_inputs:]:
        add(param.ty.shape, param.ty.dtype)
    seen: set[int] = set()

    def visit(expr) -> None:
        if isinstance(expr, tvm.ir.expr.GenericConst) and len(expr.value.shape) > 0:
            key = expr.value.__hash__()
            if key not in seen:
                seen.add(key)
                add(expr.value.shape, expr.value.dtype)

    relax.analysis.post_order_visit(main.body, visit)
    return by_dtype


def activation_bytes(mod, tvm_target) -> tuple[int, int]:
    """(peak, planned) bytes of the VM's storages after the shipped build's lowering (blocked layouts
    included: :func:`hanasc.targets.late_binding.lower_as_shipped`), by liveness."""
    import tvm
    from tvm import relax

    lowered = lower_as_shipped(mod, tvm_target)
    main = lowered["main"]
    alloc_storage = tvm.ir.Op.get("relax.vm.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.vm.alloc_tensor")
    kill = tvm.ir.Op.get("relax.vm.kill_object")
    storage_size: dict[str, int] = {}
    storage_refs: dict[str, int] = {}  # the storage var itself + tensors carved from it
    tensor_storage: dict[str, str] = {}
    live = peak = planned = 0
    input_bytes = sum(_tensor_bytes(p.ty) for p in main.params)

    def release(storage: str) -> None:
        nonlocal live
        storage_refs[storage] -= 1
        if storage_refs[storage] == 0:
            live -= storage_size[storage]

    for block in main.body.blocks:
        for binding in block.bindings:
            value, name = binding.value, str(binding.var.name)
            if not isinstance(value, relax.Call):
                continue
            if value.op.same_as(alloc_storage):
                size = int(value.args[0].values[0])
                storage_size[name], storage_refs[name] = size, 1
                live += size
                planned += size
                peak = max(peak, live)
            elif value.op.same_as(alloc_tensor):
                storage = str(value.args[0].name)
                tensor_storage[name] = storage
                storage_refs[storage] += 1
            elif value.op.same_as(kill):
                target = str(value.args[0].name)
                if target in storage_refs:
                    release(target)
                elif target in tensor_storage:
                    release(tensor_storage.pop(target))
    return peak + input_bytes, planned + input_bytes


def _tensor_bytes(ty) -> int:
    return int(np.prod([int(d) for d in ty.shape], dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize


def estimate_memory(mod, lowered: LoweredModel, target_name: str) -> MemoryEstimate:
    """Weights of the module as given, activations and workspace of its lowering for the target."""
    by_dtype = weight_bytes(mod)
    tvm_target = get_target(target_name).tvm_target()
    peak, planned = activation_bytes(with_bound_weights(mod), tvm_target)
    workspace = max((scheduled_scratch_bytes(k, tvm_target) for k in lowered.kernels), default=0)
    return MemoryEstimate(sum(by_dtype.values()), by_dtype, peak, planned, workspace)


def scheduled_scratch_bytes(kernel, tvm_target) -> int:
    """The scratch a kernel allocates once the build's default schedule has run: its buffers outside
    registers (pad buffers, ...). The unscheduled kernel's ``scratch_bytes`` also counts every fused
    stage's full-size intermediate, which the schedule inlines or keeps as a register tile (the first
    expand conv of EfficientNet-Lite0 W8A8: 51.7 MB unscheduled, 1.2 MB scheduled). Falls back to
    ``scratch_bytes`` where the kernel cannot be scheduled here."""
    import tvm
    from tvm import s_tir

    try:
        with tvm_target:
            scheduled = tvm.transform.Sequential(pipelines.default_schedule_passes(tvm_target))(
                tvm.IRModule({"main": kernel.prim_func})
            )
        sch = s_tir.Schedule(scheduled)
        root = sch.get(sch.get_sblock("root"))
    except Exception:  # no TVM schedule for this target, or a kernel without a root block
        return kernel.features.scratch_bytes
    return allocated_bytes(root)


@dataclass(frozen=True)
class ArtifactCheck:
    so_bytes: int
    rss_baseline_bytes: int
    rss_peak_bytes: int

    @property
    def rss_delta_bytes(self) -> int:
        return self.rss_peak_bytes - self.rss_baseline_bytes


RUNNER = r"""
import json, sys, threading, time
import numpy as np, psutil, tvm
from tvm import relax
shapes = json.loads(sys.argv[2])
dev = tvm.cpu()
args = [tvm.runtime.tensor(np.zeros(s, dtype=d), device=dev) for s, d in shapes]
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
stop = threading.Event()
def poll():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.0005)
thread = threading.Thread(target=poll)
thread.start()
lib = tvm.runtime.load_module(sys.argv[1])
vm = relax.VirtualMachine(lib, dev)
for _ in range(3):
    vm["main"](*args)
stop.set()
thread.join()
peak[0] = max(peak[0], proc.memory_info().rss)
print(json.dumps({"base": base, "peak": peak[0]}))
"""


def check_artifact(mod, workdir: Path | None = None) -> ArtifactCheck:
    """Export the host artifact (the shipped build: :func:`hanasc.targets.host.build_artifact`) to a .so and
    run it in a fresh process: file size and peak RSS over baseline."""
    mod = with_bound_weights(mod)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "model.so"
        export_library(host.build_artifact(mod), path)
        shapes = [([int(d) for d in p.ty.shape], str(p.ty.dtype)) for p in mod["main"].params]
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(path), json.dumps(shapes)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        data = json.loads(done.stdout.strip().splitlines()[-1])
        return ArtifactCheck(path.stat().st_size, int(data["base"]), int(data["peak"]))
