"""Render the layer table of a model (:func:`hanasc.api.inspect`) for people (a rich table); machines get
:meth:`~hanasc.api.results.InspectResult.to_json`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hanasc.api.results import InspectResult


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def print_inspect(model: InspectResult, console: Console) -> None:
    """Print one row per searchable layer, then totals and peak activation memory."""
    inputs = ", ".join(f"{s.name} {_shape(s.shape)} {s.dtype}" for s in model.inputs)
    table = Table(title=f"{model.path.name}: searchable layers (inputs: {inputs})", title_justify="left")
    for column in ("#", "layer", "op", "input", "output", "kernel", "stride", "groups"):
        table.add_column(column, overflow="fold", no_wrap=column != "layer")
    for column in ("params", "MACs", "weights fp32"):
        table.add_column(column, justify="right", no_wrap=True)
    for i, layer in enumerate(model.layers):
        table.add_row(
            str(i),
            layer.name,
            layer.op,
            _shape(layer.in_shape),
            _shape(layer.out_shape),
            _shape(layer.kernel),
            _shape(layer.stride),
            str(layer.groups),
            f"{layer.params:,}",
            f"{layer.macs:,}",
            f"{layer.weight_bytes:,} B",
        )
    console.print(table)
    t = model.totals
    counts: dict[str, int] = {}
    for layer in model.layers:
        counts[layer.op] = counts.get(layer.op, 0) + 1
    kinds = ", ".join(f"{n} {op}" for op, n in counts.items())
    console.print(f"layers: {len(model.layers)} ({kinds})")
    console.print(f"MACs: {t.macs:,} ({t.macs / 1e6:.1f} M)   params: {t.params:,} ({t.params / 1e6:.3f} M)")
    console.print(
        f"weights at fp32: {_mib(t.weight_bytes)}   peak activation memory: "
        f"{_mib(t.peak_activation_bytes)} (liveness walk over the dataflow)"
    )
    console.print(f"[dim]source: {model.source}[/dim]")
