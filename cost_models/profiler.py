"""Time single kernels: compile one fused PrimFunc alone for the target, run TVM's time_evaluator on it.

Locally (``Session.local()``) for the host, or over TVM RPC (``Session.rpc(host, port)`` or
``Session.tracker(host, port, key)``): a Relax library loaded over RPC has no ``imports``, so every kernel
is compiled alone as ``IRModule({"kernel": prim})``, exported, uploaded and timed there.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError
from hanasc.cost_models.target_info import CostTarget
from hanasc.targets.pipelines import kernel_schedule_passes
from hanasc.targets.quiet import export_library
from hanasc.targets.rpc_address import RpcAddress

KERNEL_SYMBOL = "kernel"


@dataclass(frozen=True)
class TimingConfig:
    """time_evaluator settings: ``repeat`` samples, each at least ``min_repeat_ms`` long, after warm-up."""

    repeat: int = 5
    min_repeat_ms: float = 20.0
    warmup: int = 1


@dataclass(frozen=True)
class Timing:
    """The measured time of one kernel call: median over repeats, spread = (max - min) / median."""

    median_s: float
    spread: float
    samples_s: tuple[float, ...]
    number: int  # calls averaged inside each sample


@dataclass
class Session:
    """Where kernels run: this process (``remote`` is None) or an RPC session."""

    device_id: str  # CPU model string for local runs, RPC device key / address for remote ones
    remote: object | None = None
    _tmp: tempfile.TemporaryDirectory = field(default_factory=tempfile.TemporaryDirectory, repr=False)

    @classmethod
    def local(cls) -> Session:
        return cls(device_id=local_device_id())

    @classmethod
    def rpc(cls, host: str, port: int, device_key: str | None = None) -> Session:
        from tvm import rpc

        try:
            remote = rpc.connect(host, port)
        except Exception as exc:  # TVM raises its own error types: the user needs the address and one line
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            message = f"--rpc {host}:{port}: cannot reach the TVM RPC server ({reason[:200]})"
            raise HanascError(message) from None
        return cls(device_id=device_key or f"rpc:{host}:{port}", remote=remote)

    @classmethod
    def tracker(cls, host: str, port: int, key: str) -> Session:
        from tvm import rpc

        remote = rpc.connect_tracker(host, port).request(key, session_timeout=0)
        return cls(device_id=f"tracker-key:{key}", remote=remote)

    @classmethod
    def from_address(cls, rpc_addr: str | None = None, tracker: str | None = None, key: str | None = None):
        """``--rpc HOST:PORT`` (or ``KEY@TRACKER:PORT``, :class:`hanasc.targets.rpc_address.RpcAddress`) or
        ``--tracker HOST:PORT --key K`` as given on the command line; else local."""
        if rpc_addr:
            address = RpcAddress.parse(rpc_addr)
            if address.key is not None:
                return cls.tracker(address.host, address.port, address.key)
            return cls.rpc(address.host, address.port)
        if tracker:
            if not key:
                raise HanascError("--tracker needs --key (the device key the RPC server registered)")
            address = RpcAddress.parse(tracker, "--tracker")
            return cls.tracker(address.host, address.port, key)
        return cls.local()

    def device(self, device_type: str):
        import tvm

        if self.remote is None:
            return tvm.cuda(0) if device_type == "cuda" else tvm.cpu(0)
        return self.remote.cuda(0) if device_type == "cuda" else self.remote.cpu(0)

    def load(self, lib, target: CostTarget):
        """The compiled kernel module, loaded where it will run."""
        if self.remote is None:
            return lib.jit()
        path = Path(self._tmp.name) / f"k{id(lib)}.so"
        if target.cross_cc and platform.machine() not in ("aarch64", "arm64"):
            from tvm.support import cc

            export_library(lib, path, fcompile=cc.cross_compiler(target.cross_cc))
        else:
            export_library(lib, path)
        self.remote.upload(str(path))
        return self.remote.load_module(path.name)


def local_device_id() -> str:
    """This machine's CPU model string (from /proc/cpuinfo, else platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compile_kernel(prim, target: CostTarget):
    """Compile one PrimFunc alone for the target (GPU targets get the shipped GPU rules first,
    :func:`hanasc.targets.pipelines.kernel_schedule_passes`)."""
    import tvm

    tvm_target = target.tvm_target()
    mod = tvm.IRModule({KERNEL_SYMBOL: prim.with_attr("global_symbol", KERNEL_SYMBOL)})
    with tvm_target:
        mod = tvm.transform.Sequential(kernel_schedule_passes(tvm_target))(mod)
    return tvm.compile(mod, target=tvm_target)


def random_args(prim, dev, seed: int = 0) -> list:
    """Arguments for a kernel: random floats; zeros for integer buffers (safe as indices)."""
    import tvm

    rng = np.random.default_rng(seed)
    args = []
    for param in prim.params:
        shape = tuple(int(d) for d in param.shape)
        dtype = str(param.dtype)
        if dtype.startswith(("float", "bfloat")):
            value = rng.uniform(-1, 1, size=shape).astype(dtype)
        else:
            value = np.zeros(shape, dtype=dtype)
        args.append(tvm.runtime.tensor(value, device=dev))
    return args


def time_kernel(prim, target: CostTarget, session: Session, timing: TimingConfig = TimingConfig()) -> Timing:
    """Compile, load and time one kernel where the session runs."""
    lib = session.load(compile_kernel(prim, target), target)
    dev = session.device(target.device_type)
    args = random_args(prim, dev)
    func = lib[KERNEL_SYMBOL]
    for _ in range(timing.warmup):
        func(*args)
    dev.sync()
    evaluator = lib.time_evaluator(
        KERNEL_SYMBOL, dev, number=1, repeat=timing.repeat, min_repeat_ms=int(timing.min_repeat_ms)
    )
    result = evaluator(*args)
    samples = tuple(float(s) for s in result.results)
    median = statistics.median(samples)
    number = max(1, round(timing.min_repeat_ms / 1e3 / median)) if median > 0 else 1
    return Timing(
        median_s=median,
        spread=(max(samples) - min(samples)) / median if median > 0 else 0.0,
        samples_s=samples,
        number=number,
    )
