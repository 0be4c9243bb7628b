"""What the Python API returns: frozen result types whose figures say where they came from.

A :class:`ReportFigure` is one number of a report with its ``source`` (``measured``, ``predicted`` or
``prior``) and a one-line ``provenance`` (where, how many runs, which statistic; or which model). Nothing
here imports TVM: the result types can be imported and checked without a build.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hanasc.core.layers import LayerInfo, LayerTotals
    from hanasc.frontend.onnx_loader import InputSpec
    from hanasc.passes.config import Config


def _provenance(node: Mapping[str, Any]) -> str:
    """One line: the source, then how the figure was obtained (where, statistic and runs; or which model)."""
    text = {k: v for k, v in node.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}
    parts = [f"on {text['where']}"] if "where" in text else []
    if "ratio_to_original" in text:  # timed alternately with the original (hanasc.cost_models.timing)
        parts.append(
            f"median of {text.get('runs', '?')} rounds timed alternately with the original: "
            f"{text['ratio_to_original']:g}x its latency (raw {text['raw_median_ms']} vs "
            f"{text['original_in_loop_ms']} ms)"
        )
    elif "statistic" in text:
        parts.append(text["statistic"] + (f" of {text['runs']} runs" if "runs" in text else ""))
    elif "runs" in text:
        parts.append(f"{text['runs']} runs")
    if "metric" in text:
        parts.append(f"{text['metric']} on {text.get('on', 'held-out data')}")
    parts += [f"by {text[k]}" for k in ("model", "engine") if k in text]
    parts += [f"with {text['tool']}"] if "tool" in text else []
    parts += [text["how"]] if "how" in text else []
    return f"{node['source']}: {', '.join(parts)}" if parts else str(node["source"])


def frozen_mapping(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of ``data`` (a report section)."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class ReportFigure:
    """One figure of a report: value, unit, source (measured | predicted | prior), how it was obtained."""

    value: float | int | None
    unit: str
    source: str
    provenance: str
    detail: Mapping[str, Any] = field(default_factory=frozen_mapping)

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> ReportFigure:
        """From a report's ``{"value", "unit", "source", ...detail}`` object."""
        detail = {k: v for k, v in node.items() if k not in ("value", "unit", "source")}
        return cls(
            node["value"], node.get("unit", ""), node["source"], _provenance(node), frozen_mapping(detail)
        )

    def __str__(self) -> str:
        return f"{self.value} {self.unit} ({self.provenance})"


@dataclass(frozen=True)
class ModelFigures:
    """Latency, memory, accuracy (held-out, in the metric's units), energy and parameters of one model."""

    latency_ms: ReportFigure
    memory_mb: ReportFigure
    accuracy: ReportFigure
    energy_mj: ReportFigure | None = None
    params: ReportFigure | None = None

    @classmethod
    def from_report(cls, part: Mapping[str, Any]) -> ModelFigures:
        """From the report's ``original`` or ``result`` section."""
        optional = {k: ReportFigure.from_json(part[k]) for k in ("energy_mj", "params") if k in part}
        return cls(
            latency_ms=ReportFigure.from_json(part["latency_ms"]),
            memory_mb=ReportFigure.from_json(part["memory_mb"]),
            accuracy=ReportFigure.from_json(part["accuracy"]),
            **optional,
        )


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """The files a compile or apply wrote. ``library`` is the host library (None when the target ships a
    bundle instead); ``library_sha256`` its bytes' hash (TVM host builds of one Config are byte-identical:
    ``hanasc.apply`` of a compile's Config gives the same hash); ``bundle`` the target's bundle folder."""

    out: Path
    config: Path
    library: Path | None
    library_sha256: str | None
    bundle: Path | None
    report_json: Path
    report_md: Path

    @classmethod
    def in_folder(cls, out: Path, library: str | None, bundle: str | None, report: str) -> Artifact:
        lib = out / library if library else None
        return cls(
            out=out,
            config=out / "config.json",
            library=lib,
            library_sha256=sha256_of(lib) if lib is not None else None,
            bundle=out / bundle if bundle else None,
            report_json=out / f"{report}.json",
            report_md=out / f"{report}.md",
        )


@dataclass(frozen=True)
class CompileResult:
    """What :func:`hanasc.compile` returns: the result and the original side by side, the chosen Config,
    the files written. A compile that finds nothing within the budgets and the accuracy floor raises
    :class:`hanasc.compile.pipeline.NoModelMeetsBudgets` (its ``reachable`` holds what could be reached)
    and writes nothing, so a returned result always meets them (``met`` is True)."""

    target: str
    metric: str
    original: ModelFigures
    result: ModelFigures
    config: Config
    is_original: bool  # the original model came back unchanged (selection.reason says why)
    artifact: Artifact
    budget: Mapping[str, Any]
    selection: Mapping[str, Any]
    warnings: tuple[str, ...]
    report: Mapping[str, Any]  # all of report.json, read-only
    met: bool = True

    @property
    def speedup(self) -> float | None:
        """The original's latency over the result's (same provenance on both sides where measured)."""
        a, b = self.original.latency_ms.value, self.result.latency_ms.value
        return a / b if a and b else None


@dataclass(frozen=True)
class LayerChangeRow:
    """One layer :func:`hanasc.apply` changed: its choices and weight bytes before and after (counted)."""

    name: str
    op: str
    choices: Mapping[str, Any]
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`hanasc.apply` returns: the Config it materialized, the changed layers, weight bytes
    (counted from the materialized module's parameters, not measured) and the files written."""

    config: Config
    layers: tuple[LayerChangeRow, ...]
    weight_bytes_before: int
    weight_bytes_after: int
    artifact: Artifact
    tuned_weights_replayed: bool
    build: Mapping[str, Any]
    summary: Mapping[str, Any]  # all of summary.json, read-only
    markdown: str


@dataclass(frozen=True)
class ModelCosts:
    """The estimated costs of one model: total latency, energy and memory (each with its provenance), and
    the per-kernel report (:class:`hanasc.cost_models.cost_report.CostReport`)."""

    model: str
    latency_ms: ReportFigure
    energy_mj: ReportFigure
    memory_bytes: Mapping[str, ReportFigure]
    report: Any

    def to_json(self) -> dict:
        return self.report.to_json() | {"model": self.model}


@dataclass(frozen=True)
class CostsResult:
    """What :func:`hanasc.costs` returns: one :class:`ModelCosts` per model, in the order given."""

    target: str
    models: tuple[ModelCosts, ...]

    def table(self) -> str:
        if len(self.models) == 1:
            return self.models[0].report.table()
        return "\n\n".join(f"{m.model}\n{m.report.table()}" for m in self.models)


@dataclass(frozen=True)
class CalibrateResult:
    """What :func:`hanasc.calibrate` returns: what was done (``calibrated``, ``exported``, ``installed``),
    for which target and device, the calibration and its table (held-out error of the fit)."""

    action: str
    target: str
    device: str | None
    calibration: Any
    table: str
    path: Path | None = None  # the exported file


@dataclass(frozen=True)
class ProfileResult:
    """What :func:`hanasc.profile` returns: kernels measured and reused, the latency model trained, the
    profile store (:class:`hanasc.compile.profile_job.ProfileSummary` as ``summary``)."""

    target: str
    device: str
    store: Path
    kernels_measured: int
    kernels_reused: int
    kernels_failed: tuple[str, ...]
    latency_model: str | None
    latency_model_samples: int
    seconds: float
    summary: Any

    def table(self) -> str:
        return self.summary.table()


@dataclass(frozen=True)
class InspectResult:
    """What :func:`hanasc.inspect` returns: inputs, outputs, the layers the search can change and the
    totals (static counts from the cleaned graph, not measured)."""

    path: Path
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    layers: tuple[LayerInfo, ...]
    totals: LayerTotals
    source: str

    def to_json(self) -> dict:
        """The layer table as JSON (what ``hanasc inspect --json`` prints)."""
        t = self.totals
        return {
            "model": str(self.path),
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in self.inputs],
            "outputs": list(self.outputs),
            "layers": [_layer_json(layer) for layer in self.layers],
            "totals": {
                "layers": len(self.layers),
                "macs": t.macs,
                "params": t.params,
                "weight_bytes": t.weight_bytes,
                "peak_activation_bytes": t.peak_activation_bytes,
                "source": self.source,
            },
        }


def _layer_json(layer: LayerInfo) -> dict:
    return {
        "name": layer.name,
        "op": layer.op,
        "in_shape": list(layer.in_shape),
        "out_shape": list(layer.out_shape),
        "kernel": list(layer.kernel),
        "stride": list(layer.stride),
        "groups": layer.groups,
        "params": layer.params,
        "macs": layer.macs,
        "weight_bytes": layer.weight_bytes,
    }
