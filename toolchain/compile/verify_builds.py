"""The verification walk's host builds through the executor seam (:mod:`hanasc.core.executor`).

When the walk needs a candidate's artifact, that candidate and the next ones it may verify (those the
cost model still puts within the latency budget, up to the ``--verify-limit`` left) are built together,
one work unit each, up to the executor's ``workers`` at once; the walk then measures them one at a time,
in rank order, after the whole batch finished: a timing never shares the machine with a build. The walk's
decisions are unchanged, so its answer is the in-process one; a look-ahead build the walk never reaches
only cost CPU time.

Each build is content-addressed (the materialized module's serialization, the TVM target, hanasc and TVM
versions, the lowering code and the target's tuning database) and kept in the run's work folder
(``<work>/builds/<key>.so``): a build already made there (an earlier attempt, ``--resume``) is loaded,
never redone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from hanasc.compile.context import RunContext
from hanasc.core.atomic import atomic_file
from hanasc.core.executor import Executor, WorkUnit, content_key, make_executor
from hanasc.recovery.bias_correction import materialize_recovered
from hanasc.search.nsga2 import Candidate
from hanasc.targets import host
from hanasc.targets.quiet import export_library
from hanasc.targets.tuning import database_dir
from hanasc.targets.tuning_database import RECORDS


class StoredExecutable(tvm.runtime.Executable):
    """A host artifact loaded from the build store; exporting it copies the stored library (a loaded
    library cannot be serialized again)."""

    def __init__(self, path: Path) -> None:
        super().__init__(tvm.runtime.load_module(str(path)))
        self.path = path

    def export_library(self, file_name, **kwargs) -> None:
        if kwargs:
            raise ValueError(f"{self.path}: a stored host library is exported as it is (no {sorted(kwargs)})")
        shutil.copyfile(self.path, file_name)


def build_library(mod_json: str, target_json: str) -> bytes:
    """The work unit: the module (``tvm.ir.save_json``) built for the host target (its JSON), as the bytes
    of its shared library. Runs in this process or a Ray worker (which may be another machine)."""
    mod = tvm.ir.load_json(mod_json)
    executable = host.build_artifact(mod, tvm.target.Target(json.loads(target_json)))
    with tempfile.TemporaryDirectory(prefix="hanasc-build-") as folder:
        path = Path(folder) / "model.so"
        export_library(executable, path)
        return path.read_bytes()


@dataclass
class BuildStore:
    """Built host libraries by content address, in ``folder``; counts what was fetched and built."""

    folder: Path
    fetched: int = 0
    built: int = 0

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.so"

    def fetch(self, key: str) -> StoredExecutable | None:
        if not self.path(key).is_file():
            return None
        self.fetched += 1
        return StoredExecutable(self.path(key))

    def put(self, key: str, library: bytes) -> StoredExecutable:
        with atomic_file(self.path(key)) as tmp:
            tmp.write_bytes(library)
        self.built += 1
        return StoredExecutable(self.path(key))


def pipeline_fingerprint() -> str:
    """What else decides a build: hanasc's and TVM's versions and the lowering code (``hanasc.targets``)."""
    root = Path(host.__file__).parent
    versions = f"{importlib.metadata.version('hanasc')}|{tvm.__version__}"
    digest = hashlib.sha256(versions.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def candidate_module(ctx: RunContext, config, candidate: Candidate):
    """The candidate's materialized module (what ships) and its fine-tuned values (None: the data-light
    recovery's)."""
    tuned = ctx.tuned.get(tuple(candidate.genome))
    values = tuned.values if tuned else None
    return materialize_recovered(ctx.model, config, ctx.ranges, values), values


@dataclass
class WalkBuilds:
    """Modules and host artifacts of the verification walk over ``order`` (the ranked candidates).

    ``within_budget(candidate)``: whether the walk would still build it (the cost model's estimate now);
    ``tune(mod)``: MetaSchedule tuning before a build (a no-op without ``--tune-minutes``). The executor
    (``--workers`` / ``--cluster``) is made for the first build the store does not hold, and closed by
    :meth:`close`: a walk that builds nothing (remote or predicted latencies, all fetched) starts no Ray."""

    ctx: RunContext
    order: list[Candidate]
    within_budget: Callable[[Candidate], bool]
    tune: Callable[[object], None]
    store: BuildStore | None = field(default=None, init=False)  # made with the first build
    modules: dict = field(default_factory=dict, init=False)
    executables: dict = field(default_factory=dict, init=False)
    handed_out: int = field(default=0, init=False)
    batches: list[int] = field(default_factory=list, init=False)  # units per batch sent to the executor
    _executor: Executor | None = field(default=None, init=False)
    where: str = field(default="no executor (every build fetched)", init=False)

    def module(self, config, candidate: Candidate):
        """(module, fine-tuned values) of ``candidate``, materialized once."""
        genome = tuple(candidate.genome)
        if genome not in self.modules:
            self.modules[genome] = candidate_module(self.ctx, config, candidate)
        return self.modules[genome]

    def executable(self, candidate: Candidate):
        """The candidate's host artifact: fetched or built, with the next ones the walk may verify."""
        genome = tuple(candidate.genome)
        if genome not in self.executables:
            self._build_batch(candidate)
        self.handed_out += 1
        return self.executables.pop(genome)

    def _build_batch(self, first: Candidate) -> None:
        if self.store is None:
            self.store = BuildStore(self.ctx.work / "builds")
            self._target, self._pipeline = str(host.tvm_target()), pipeline_fingerprint()
        batch = [first, *self._ahead(first)]
        units, waiting = [], []
        for candidate in batch:
            mod = self.module(self.ctx.space.decode(candidate.genome), candidate)[0]
            self.tune(mod)
            mod_json = tvm.ir.save_json(mod)
            key = content_key(mod_json, self._target, self._pipeline, self._tuning_state())
            stored = self.store.fetch(key)
            if stored is not None:
                self.executables[tuple(candidate.genome)] = stored
                continue
            label = f"verification build of candidate {self.order.index(candidate) + 1}"
            units.append(WorkUnit(key, build_library, (mod_json, self._target), label))
            waiting.append(candidate)
        if not units:
            return
        executor = self._started()
        self.batches.append(len(units))
        self.ctx.stage.log(f"building {len(units)} candidate(s) on {executor.where}")
        for candidate, unit, library in zip(waiting, units, executor.map(units), strict=True):
            self.executables[tuple(candidate.genome)] = self.store.put(unit.key, library)

    def _ahead(self, first: Candidate) -> list[Candidate]:
        """The candidates after ``first`` the walk may verify next, as many as the executor runs at once
        and the verification limit leaves."""
        room = min(self._width(), self.ctx.options.max_attempts - self.handed_out) - 1
        later = self.order[self.order.index(first) + 1 :]
        return [c for c in later if tuple(c.genome) not in self.executables and self.within_budget(c)][:room]

    def _tuning_state(self) -> str:
        """The host tuning database's size and time: its records apply to every build."""
        records = database_dir(host.tvm_target()) / RECORDS
        stat = records.stat() if records.is_file() else None
        return f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "none"

    def _width(self) -> int:
        """Builds at once: ``--workers``, else the cluster's CPUs (``--cluster``), else one."""
        options = self.ctx.options
        if options.workers:
            return options.workers
        return self._started().workers if options.cluster else 1

    def _started(self) -> Executor:
        if self._executor is None:
            self._executor = make_executor(self.ctx.options.workers, self.ctx.options.cluster)
            self.where = self._executor.where
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
        self._executor = None

    def summary(self) -> str | None:
        """What the walk built and fetched (None when it needed no host build)."""
        if self.store is None:
            return None
        return (
            f"verification builds: {self.store.built} built on {self.where} "
            f"in {len(self.batches)} batch(es), "
            f"{self.store.fetched} fetched from the run's folder ({self.store.folder})"
        )
