"""One seam for the compile job's independent work (builds today; simulation batches, fine-tuning and
profiling builds are meant to follow): :class:`InProcessExecutor` runs it here, one unit after the other
(the default); :class:`RayExecutor` runs it as Ray tasks, on a local Ray that hanasc starts with
``--workers N`` CPUs or on an existing cluster (``--cluster ray://HOST:PORT`` or ``RAY_ADDRESS``).

A :class:`WorkUnit` is a module-level function and picklable arguments, named by a content address
(:func:`content_key`) so its caller can keep the result and fetch it instead of redoing the work. Ray is
imported only when a :class:`RayExecutor` is made; scheduling, retries of lost workers and the transfer
of results are Ray's (tasks with ``num_cpus``, ``max_retries`` and object references), not hanasc's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hanasc.core.errors import HanascError

CLUSTER_EXTRA = "pip install hanasc[cluster]"
DEFAULT_RETRIES = 2  # a unit whose worker process or node died is run again this many times at most


@dataclass(frozen=True)
class WorkUnit:
    """One independent piece of work: ``fn(*args)`` (``fn`` importable by name, ``args`` picklable)."""

    key: str  # content address: equal keys give equal results
    fn: Callable[..., Any]
    args: tuple = ()
    label: str = ""  # what errors and logs call it (a candidate, a kernel)


def content_key(*parts: object) -> str:
    """A content address of ``parts`` (JSON-able values, or strings such as a serialized module)."""
    digest = hashlib.sha256()
    for part in parts:
        text = part if isinstance(part, str) else json.dumps(part, sort_keys=True, default=str)
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()[:24]


class Executor(Protocol):
    """Runs work units; results come back in submission order. ``workers``: units run at once."""

    workers: int
    where: str  # said in logs and the report: "this process", "2 local Ray workers", ...

    def map(self, units: Sequence[WorkUnit]) -> list: ...

    def close(self) -> None: ...


@dataclass
class InProcessExecutor:
    """Today's behaviour: each unit runs in this process, in order; a failure is raised as it is (a
    deterministic build failure would fail again, so nothing is retried)."""

    workers: int = 1
    where: str = "this process"

    def map(self, units: Sequence[WorkUnit]) -> list:
        return [unit.fn(*unit.args) for unit in units]

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    """What a Ray task runs: one unit."""
    return fn(*args)


@dataclass
class RayExecutor:
    """Units as Ray tasks of one CPU each. ``address=None``: a local Ray with ``workers`` CPUs, started here
    and shut down by :meth:`close`; else the cluster at ``address`` (``ray://HOST:PORT`` through Ray
    Client, or ``HOST:PORT`` of a head this machine belongs to), whose CPUs bound ``workers``.

    A task whose worker process or node dies is retried by Ray up to ``retries`` times; an exception the
    work itself raises is not retried (it would be raised again) and comes back as the same exception."""

    workers: int | None = None
    address: str | None = None
    retries: int = DEFAULT_RETRIES
    where: str = field(default="", init=False)
    _ray: Any = field(default=None, init=False, repr=False)
    _task: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_executor_options(self.workers, self.address)
        import ray  # deferred: only `--workers` / `--cluster` runs load Ray

        option = f"--cluster {self.address}" if self.address else f"--workers {self.workers}"
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
                cpus = int(ray.cluster_resources().get("CPU", 1))
                self.workers = min(self.workers or cpus, cpus)
                self.where = f"{self.workers} CPUs of the Ray cluster at {self.address}"
            else:
                ray.init(
                    address="local",  # never an existing cluster from RAY_ADDRESS: --workers starts one
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                )
                self.where = f"{self.workers} local Ray workers"
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
            raise HanascError(f"{option}: Ray did not start: {_first_line(exc)}") from None
        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=self.retries)(_call)

    def map(self, units: Sequence[WorkUnit]) -> list:
        ray = self._ray
        refs = [self._task.remote(unit.fn, unit.args) for unit in units]
        results = []
        for unit, ref in zip(units, refs, strict=True):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:  # the work's own exception, raised as it was
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayError as exc:  # worker or node lost more than `retries` times
                raise HanascError(
                    f"{unit.label or unit.key}: its Ray task failed after {self.retries} retries on "
                    f"{self.where}: {_first_line(exc)}"
                ) from None
        return results

    def close(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._ray = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cluster_address(cluster: str | None) -> str | None:
    """``--cluster``, else ``RAY_ADDRESS`` from the environment (None: no cluster to join)."""
    return cluster or os.environ.get("RAY_ADDRESS") or None


def check_executor_options(workers: int | None, cluster: str | None) -> None:
    """The checks that need no Ray started: ``--workers`` positive, Ray installed when asked for, a
    cluster address well formed and reachable (one line naming the option; exit 2 in the CLI)."""
    if workers is not None and workers < 1:
        raise HanascError(f"--workers {workers}: must be 1 or more")
    if workers is None and cluster is None:
        return
    option = f"--cluster {cluster}" if cluster else f"--workers {workers}"
    if importlib.util.find_spec("ray") is None:
        raise HanascError(f"{option}: Ray is not installed here; {CLUSTER_EXTRA}")
    if cluster:
        host, port = _host_port(cluster, option)
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise HanascError(f"{option}: no Ray cluster answers at {host}:{port} ({reason})") from None


def make_executor(workers: int | None = None, cluster: str | None = None) -> Executor:
    """The executor the options ask for: in-process without ``workers`` or ``cluster``, else Ray."""
    if cluster:
        return RayExecutor(workers, cluster)
    if workers is None or workers <= 1:
        check_executor_options(workers, None)
        return InProcessExecutor()
    return RayExecutor(workers)


def _host_port(address: str, option: str) -> tuple[str, int]:
    """HOST and PORT of ``ray://HOST:PORT`` or ``HOST:PORT``."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or "/" in rest:
        raise HanascError(f"{option}: expected ray://HOST:PORT or HOST:PORT")
    return host, int(port)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
