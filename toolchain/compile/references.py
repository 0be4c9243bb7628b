"""The compile job's reference measurements: the original (and uniform int8) compiled and timed where
the target is reachable before the search, kept for ``--resume``; on the host the original's artifact is
kept to time every candidate beside it (:mod:`hanasc.cost_models.timing`)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hanasc.compile.context import RunContext
from hanasc.compile.verify import measure_remote
from hanasc.core.atomic import atomic_file
from hanasc.core.cache_safety import cache_warning
from hanasc.core.errors import HanascError
from hanasc.cost_models.timing import HostReference, time_layers, time_side_by_side
from hanasc.frontend.loading import LoadedModel
from hanasc.recovery.bias_correction import materialize_recovered
from hanasc.search.seeds import uniform_genome
from hanasc.targets import host
from hanasc.targets.pipelines import collect_build_reports


@dataclass
class _SavedMeasurements:
    """The measurements made before the search (per uniform dtype), kept for ``--resume``."""

    path: Path
    resume: bool
    entries: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.resume and self.path.is_file()):
            return
        try:
            self.entries = dict(json.loads(self.path.read_text()))
        except (ValueError, TypeError, UnicodeDecodeError):
            cache_warning(f"{self.path}: unreadable measurements; they are taken again")

    def put(self, dtype: str, latency: dict, shipped=None) -> None:
        self.entries[dtype] = {
            "latency": latency,
            "layer_ms": shipped.layer_ms if shipped is not None else None,
            "other_ms": shipped.other_ms if shipped is not None else None,
        }
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries))


def measure_references(run: RunContext) -> dict | None:
    """Compile and measure the original (and uniform int8, whose per-layer times calibrate the int8 kernel
    estimate) where the target is reachable; elsewhere only check that the original builds. On the host both
    are timed in one interleaved loop, and the original is kept to time candidates beside it. Returns the
    original's latency figure (None when not measurable)."""
    info, stage, model, space = run.info, run.stage, run.model, run.space
    measurer = info.measurer(run.session)
    measure = _ReferenceMeasure(run, measurer)
    references: list[_Reference] = []
    # the builds report what they fell back on (layout, naive kernels)
    with collect_build_reports() as builds, fails_as_one_line(model, info.name):
        if measurer is None:  # check that it builds: fail in seconds, not after the search
            info.check_build(model.mod, stage.log)
        else:
            stage.log(f"compiling and measuring the original model on {measurer.where(run.options.rpc)}")
            references.append(measure.prepare(model.mod, "float32"))
    if builds:
        stage.log(builds[0].line())
    int8 = uniform_genome(space, (8, 8))
    if measurer is not None and int8 is not None:  # a second measurement: int8 kernels scale on their own
        where = measurer.where(run.options.rpc)
        stage.log(f"compiling and measuring uniform int8 on {where} (calibrates the int8 kernel estimate)")
        int8_mod = materialize_recovered(model, space.decode(int8), run.ranges)
        references.append(measure.prepare(int8_mod, "int8"))
    with fails_as_one_line(model, info.name):  # the original's first runs happen here on the host
        measure.finish(references)
    if not references:
        return None
    original = references[0]
    run.costs.observe(space.identity(), original.latency["value"])
    if len(references) > 1:
        run.costs.observe(int8, references[1].latency["value"])
    if measurer.local:  # candidates are timed beside the original's artifact
        run.reference = HostReference(model.mod, original.latency["value"], original.executable)
    return original.latency


@dataclass
class _Reference:
    """One reference model: its latency once known (read back with ``--resume``, or measured), else the
    host executable waiting to be timed with the others."""

    dtype: str
    latency: dict | None = None
    executable: object = None
    shipped: object = None  # per-layer times of the host artifact


class _ReferenceMeasure:
    """Latency of the reference modules where the target is reachable (the host or the RPC device); on the
    host, a uniform ``dtype`` build also gives the search its per-layer times, and all references are timed
    together in one interleaved loop (:mod:`hanasc.cost_models.timing`). Kept in the work folder: a resumed
    run reuses them, so its search sees what the interrupted one saw."""

    def __init__(self, run: RunContext, measurer) -> None:
        self.run = run
        self.measurer = measurer  # hanasc.targets.base.Measurer (None: nothing is measured)
        self.saved = _SavedMeasurements(run.work / "measurements.json", run.options.resume)

    def prepare(self, mod, dtype: str) -> _Reference:
        """Reuse or measure (RPC) the reference, or build it on the host for :meth:`finish` to time."""
        run, saved = self.run, self.saved
        if dtype in saved.entries:
            entry = saved.entries[dtype]
            if entry.get("layer_ms"):
                run.costs.use_shipped_times(dtype, entry["layer_ms"], entry.get("other_ms"))
            run.stage.log(f"the {dtype} measurements of the interrupted run are reused (--resume)")
            return _Reference(dtype, latency=entry["latency"])
        if not self.measurer.local:
            latency = measure_remote(mod, run.info, self.measurer.session, run.options.measure_repeats)[1]
            saved.put(dtype, latency)
            return _Reference(dtype, latency=latency)
        executable = host.build_artifact(mod)  # untuned
        shipped = time_layers(executable, run.probe, [layer.name for layer in run.model.layers])
        if shipped is not None:
            run.costs.use_shipped_times(dtype, shipped.layer_ms, shipped.other_ms)
            run.stage.log(f"per-layer times of the shipped {dtype} artifact measured for the estimate")
        return _Reference(dtype, executable=executable, shipped=shipped)

    def finish(self, references: list[_Reference]) -> None:
        """Time the host references still without a latency in one interleaved loop, and keep them."""
        pending = [r for r in references if r.latency is None]
        if not pending:
            return
        labels = [f"uniform {r.dtype}" if r.dtype != "float32" else "the original" for r in pending]
        figures = time_side_by_side(
            [r.executable for r in pending], labels, self.run.probe, self.run.options.measure_repeats
        )
        for reference, latency in zip(pending, figures, strict=True):
            reference.latency = latency
            self.saved.put(reference.dtype, latency, reference.shipped)


@contextmanager
def fails_as_one_line(model: LoadedModel, target: str):
    """A TVM failure while building the original model becomes one line naming the model and target."""
    try:
        yield
    except HanascError:
        raise
    except Exception as exc:  # TVM raises many types (TVMError, InternalError, ValueError, ...)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Check failed" in line or "Error" in line), None)
        reason = (reason or (lines[0] if lines else type(exc).__name__))[:300]
        raise HanascError(f"{model.path}: cannot be compiled for {target}: {reason}") from None
