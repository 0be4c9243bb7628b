"""MetaSchedule tuning of a model's fused kernels, with a persistent tuning database per target.

``tune_and_build`` fuses the module the way the default CPU pipeline does, extracts one task per distinct
fused kernel, skips every task whose workload already has a record in the target's JSON database
(``cache_dir()/tuning/<target-key>/``), tunes the rest with TVM's own search (evolutionary search, XGBoost
cost model) within a time budget, and builds with ``MetaScheduleApplyDatabase`` inside the fused
pipeline. A kernel tuned once, by any model, is never tuned again.

Local measurement serves the host. A target whose code cannot run here (aarch64) is measured on a device
through TVM RPC (``RpcDevice``: a server ``host:port`` or a tracker ``key@host:port``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanasc.core.errors import HanascError
from hanasc.core.logs import quiet_logger
from hanasc.core.paths import cache_dir
from hanasc.targets import tuning_builder
from hanasc.targets.cuda_toolchain import kernel_compiler, local_gpu_available
from hanasc.targets.isa import is_gpu
from hanasc.targets.pipelines import fused_passes, has_default_schedule, to_blocked_layout, tuned_pipeline
from hanasc.targets.registry import get_target
from hanasc.targets.rpc_address import RpcAddress
from hanasc.targets.tuning_database import database_lock, open_database

Progress = Callable[[str], None]
_CUDA_LIMITS = {
    "max_threads_per_block": 1024,
    "max_shared_memory_per_block": 49152,
    "thread_warp_size": 32,
    "registers_per_block": 65536,
}
_HEAVY_INTRINSICS = ("cuda", "rocm", "hexagon")  # TVMScript-parsed at import: 100-150 s here, GPU-only


class TuningError(HanascError):
    """Tuning could not run (bad RPC address, no tasks measurable, ...)."""


@dataclass(frozen=True)
class RpcDevice:
    """Where candidates are measured when the target is not this machine: a server or a tracker + key."""

    host: str
    port: int
    key: str | None = None  # tracker key; None: connect to an RPC server directly
    session_timeout_s: int = 120

    @classmethod
    def parse(cls, spec: str) -> RpcDevice:
        """``host:port`` (a server) or ``key@host:port`` (a tracker and the device key): the one parser,
        :class:`hanasc.targets.rpc_address.RpcAddress`."""
        address = RpcAddress.parse(spec)
        return cls(host=address.host, port=address.port, key=address.key)


@dataclass(frozen=True)
class TuningOptions:
    """Search settings. ``trials_per_task`` caps one kernel; ``layout_rewrite`` prepacks weights."""

    trials_per_task: int = 32
    trials_per_iter: int = 16
    group: int = 4  # tasks tuned together (the budget is checked between groups)
    population: int = 256
    layout_rewrite: bool = False
    blocked: bool = True  # convolutions in NCHW16c/8c (hanasc.targets.lowering.blocked_layout) before tuning
    tune_scheduled: bool = False  # also tune kernels that a default rule (cpu_schedules) schedules
    seed: int = 0


@dataclass
class TunedBuild:
    """A build whose kernels come from the tuning database, and what tuning it took."""

    executable: Any  # None when built with build=False
    database_dir: Path
    tasks_total: int  # kernels to tune (all, or those without a default schedule)
    database_hits: int
    tasks_tuned: int
    tasks_left: int  # tasks still without a record (budget ran out): tuned by the next run
    trials: int
    tuning_seconds: float
    build_seconds: float
    default_scheduled: int = 0  # kernels a default CPU rule schedules (cpu_schedules, dlight GEMV)

    def summary(self) -> str:
        return (
            f"{self.default_scheduled} kernels with a default schedule; "
            f"{self.tasks_total} to tune: {self.database_hits} from the database, "
            f"{self.tasks_tuned} tuned now ({self.trials} trials, {self.tuning_seconds:.0f} s), "
            f"{self.tasks_left} untuned"
        )


def resolve_target(target, default_cores: int = 4):
    """A TVM target from a hanasc target name or a TVM target, with ``num-cores`` (MetaSchedule needs it).

    A cross target without ``num-cores`` gets ``default_cores`` (a Cortex-A78 cluster has 4).
    """
    import tvm

    if isinstance(target, str):
        target = get_target(target).tvm_target()
        if target is None:
            raise TuningError("this target is not compiled by TVM: nothing to tune")
    if is_gpu(target):  # MetaSchedule's GPU rules read these; CUDA limits of every sm_70+ GPU incl. Orin
        missing = {k: v for k, v in _CUDA_LIMITS.items() if target.attrs.get(k) is None}
        return tvm.target.Target({**target.export(), **missing}) if missing else target
    if target.attrs.get("num-cores") is None:
        target = tvm.target.Target({**target.export(), "num-cores": default_cores})
    return target


def target_key(target) -> str:
    """A folder name for a target's database: kind, CPU, and a hash of the full target and TVM version."""
    import tvm

    cpu = str(target.attrs.get("mcpu", "") or target.attrs.get("mtriple", "") or "generic")
    digest = hashlib.sha1(f"{target}|{tvm.__version__}".encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{target.kind.name}-{cpu}-{digest}")


def database_dir(target, root: Path | None = None) -> Path:
    """Where the target's tuning database lives: ``<root or cache_dir()/tuning>/<target-key>/``."""
    return Path(root or cache_dir() / "tuning") / target_key(target)


@contextmanager
def light_intrinsics(gpu: bool = False) -> Iterator[None]:
    """Import ``tvm.s_tir.tensor_intrin`` without its GPU intrinsics (CPU tuning needs only x86/arm).

    The GPU modules are stubbed for the import and unstubbed afterwards, so a later explicit import of
    ``tvm.s_tir.tensor_intrin.cuda`` still loads (and registers) the real one. ``gpu=True`` imports
    everything (CUDA tuning needs the CUDA intrinsics).
    """
    base = "tvm.s_tir.tensor_intrin"
    if gpu:
        import tvm.s_tir.tensor_intrin.cuda  # noqa: F401 (registers the CUDA intrinsics)
    if base in sys.modules:
        yield
        return
    stubs = {f"{base}.{name}": types.ModuleType(f"{base}.{name}") for name in _HEAVY_INTRINSICS}
    sys.modules.update(stubs)
    try:
        import tvm.s_tir.tensor_intrin as package  # noqa: F401 (registers the CPU intrinsics)
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
            short = name.rsplit(".", 1)[1]
            if base in sys.modules and getattr(sys.modules[base], short, None) is stubs[name]:
                delattr(sys.modules[base], short)
    yield


def tuning_module(mod, target, layout_rewrite: bool = False):
    """The module as MetaSchedule sees it: fused PrimFuncs (weights as layout-free buffers if asked)."""
    import tvm
    from tvm import relax

    passes = fused_passes(target) + (
        [relax.transform.AttachAttrLayoutFreeBuffers()] if layout_rewrite else []
    )
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _has_record(database, task) -> bool:
    mod = task.dispatched[0]
    return database.has_workload(mod) and bool(database.get_top_k(database.commit_workload(mod), 1))


def tune_and_build(
    mod,
    target,
    *,
    minutes: float,
    db_dir: Path | None = None,
    progress: Progress | None = None,
    rpc: RpcDevice | None = None,
    options: TuningOptions | None = None,
    build: bool = True,
) -> TunedBuild:
    """Tune the fused kernels of ``mod`` that the database lacks, then build with it (unless ``build``
    is False: ``executable`` is then None, and builds of the target pick the records up,
    :func:`hanasc.targets.late_binding.compile_late_bound`).

    ``mod`` has its weights bound, or bound except packed integer weights
    (``bind_weights(mod, keep_packed=True)``: the kernels the shipped artifact runs).

    ``target``: a TVM target or a hanasc target name (``"host"``, ``"cortex-a78"``).
    ``minutes`` bounds the search (checked after each measured batch); ``db_dir`` defaults to the
    target's folder under ``cache_dir()/tuning``. ``rpc`` measures on a remote device (required for a
    target this machine cannot run).
    """
    import tvm

    target = resolve_target(target)
    options = options or TuningOptions()
    say = progress or (lambda _msg: None)
    db_path = Path(db_dir) if db_dir is not None else database_dir(target)
    with contextlib.ExitStack() as stack, light_intrinsics(is_gpu(target)), _kernel_compiler(target):
        from tvm.s_tir import meta_schedule as ms

        stack.enter_context(database_lock(db_path))  # one tuner appends at a time
        database = open_database(db_path)
        if options.blocked and not is_gpu(target):
            mod = to_blocked_layout(mod, target)  # as the build does
        fused = tuning_module(mod, target, options.layout_rewrite)
        tasks = [
            t
            for t in ms.relax_integration.extract_tasks(fused, target)
            if not t.dispatched[0].attrs.get("tirx.is_scheduled", False)
        ]
        ruled = [has_default_schedule(t.dispatched[0]["main"], target) for t in tasks]
        if not options.tune_scheduled:  # kernels a default rule schedules well are not worth the search
            tasks = [t for t, has_rule in zip(tasks, ruled, strict=True) if not has_rule]
        todo = [t for t in tasks if not _has_record(database, t)]
        say(f"{len(tasks)} kernels to tune, {len(tasks) - len(todo)} already in {db_path}")
        trials, seconds = 0, 0.0
        if todo and minutes > 0:
            trials, seconds = _tune(todo, target, database, minutes, options, rpc, say)
        left = sum(not _has_record(database, t) for t in todo)
        start = time.perf_counter()
        executable = None
        if build:
            with target, database, tvm.transform.PassContext(opt_level=3):
                executable = tvm.compile(
                    mod, target=target, relax_pipeline=tuned_pipeline(target, options.layout_rewrite)
                )
        build_seconds = time.perf_counter() - start
    return TunedBuild(
        executable=executable,
        database_dir=db_path,
        tasks_total=len(tasks),
        default_scheduled=sum(ruled),
        database_hits=len(tasks) - len(todo),
        tasks_tuned=len(todo) - left,
        tasks_left=left,
        trials=trials,
        tuning_seconds=seconds,
        build_seconds=build_seconds,
    )


def _tune(tasks, target, database, minutes, options, rpc, say) -> tuple[int, float]:
    """Tune ``tasks`` in small groups, largest kernels first, until done or the time is up.

    MetaSchedule's scheduler measures a first batch of every task before any callback can stop it, so
    the budget is checked between groups: the overshoot is at most one group.
    """
    from tvm.s_tir import meta_schedule as ms

    budget = _Budget(seconds=minutes * 60.0, say=say)
    ordered = sorted(tasks, key=_task_flops, reverse=True)
    for first in range(0, len(ordered), options.group):
        if budget.spent():
            say(f"tuning budget spent: {len(ordered) - first} kernels left for the next run")
            break
        group = ordered[first : first + options.group]
        with (
            tempfile.TemporaryDirectory(prefix="hanasc-tune-") as work_dir,
            # MetaSchedule logs every scheduler round at INFO; the progress comes from `say`
            quiet_logger("tvm.s_tir.meta_schedule", logging.WARNING),
        ):
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                group,
                work_dir=work_dir,
                strategy=ms.search_strategy.EvolutionarySearch(population_size=options.population),
                seed=options.seed,
            )
            builder, runner = _builder_runner(target, rpc)
            budget.tasks = len(contexts)
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=work_dir,
                max_trials_global=options.trials_per_task * len(contexts),
                max_trials_per_task=options.trials_per_task,
                num_trials_per_iter=options.trials_per_iter,
                builder=builder,
                runner=runner,
                database=database,
                measure_callbacks=[*ms.MeasureCallback.create("default"), budget.callback()],
            )
    return budget.trials, time.perf_counter() - budget.start


def _kernel_compiler(target):
    """CUDA kernels compile with nvcc when NVRTC is absent (set before the builder workers start)."""
    return kernel_compiler() if is_gpu(target) else nullcontext()


def _task_flops(task) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0])) * task.weight
    except Exception:  # kernels the estimator cannot read go last
        return 0.0


def _builder_runner(target, rpc: RpcDevice | None):
    """A local builder (light build function, long timeout) and a local or RPC runner."""
    from tvm.s_tir import meta_schedule as ms

    host = target.host if is_gpu(target) and target.host is not None else target
    cross = "aarch64" in str(host.attrs.get("mtriple", ""))
    if is_gpu(target) and rpc is None and not (local_gpu_available() and not cross):
        raise TuningError(
            "tuning a CUDA target needs its GPU: give the device's RPC server or tracker (--rpc)"
        )
    if cross and rpc is None:
        raise TuningError("tuning an aarch64 target needs a device: give an RPC server or tracker (--rpc)")
    builder = ms.builder.LocalBuilder(
        f_build=tuning_builder.build_kernel,
        f_export=tuning_builder.export_aarch64 if cross else None,
        timeout_sec=120,
    )
    if rpc is None:
        return builder, ms.runner.LocalRunner(timeout_sec=60)
    config = ms.runner.RPCConfig(
        tracker_host=rpc.host,
        tracker_port=rpc.port,
        tracker_key=rpc.key or "server",
        session_timeout_sec=rpc.session_timeout_s,
    )
    runner = ms.runner.RPCRunner(
        rpc_config=config,
        f_create_session=None if rpc.key else tuning_builder.connect_server,
    )
    return builder, runner


@dataclass
class _Budget:
    """Counts trials, reports progress, and tells when the time budget is spent.

    Tasks are not terminated from the callback: the scheduler terminates finished tasks itself and fails
    on a second termination, so the budget is enforced between groups.
    """

    seconds: float
    say: Progress
    tasks: int = 0
    trials: int = 0
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.perf_counter()

    def spent(self) -> bool:
        return time.perf_counter() - self.start >= self.seconds

    def callback(self):
        from tvm.ir.utils import derived_object
        from tvm.s_tir import meta_schedule as ms

        budget = self

        @derived_object
        class _Callback(ms.measure_callback.PyMeasureCallback):
            def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results) -> None:
                budget.on_batch(task_scheduler, task_id, len(candidates))

        return _Callback()

    def on_batch(self, _scheduler, task_id: int, count: int) -> None:
        self.trials += count
        elapsed = time.perf_counter() - self.start
        self.say(f"task {task_id}: {self.trials} trials, {elapsed:.0f}/{self.seconds:.0f} s")
