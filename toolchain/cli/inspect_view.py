"""Render the layer table of a loaded model for people (rich table) and machines (JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hanasc.frontend.loading import LoadedModel

SOURCE = "static count from the cleaned graph (not measured)"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def inspect_json(model: LoadedModel) -> dict:
    """The layer table as a JSON-ready dict (``layers`` list + ``totals`` object)."""
    return {
        "model": str(model.path),
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in model.inputs],
        "outputs": model.output_names,
        "layers": [
            {
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
            for layer in model.layers
        ],
        "totals": {
            "layers": len(model.layers),
            "macs": model.totals.macs,
            "params": model.totals.params,
            "weight_bytes": model.totals.weight_bytes,
            "peak_activation_bytes": model.totals.peak_activation_bytes,
            "source": SOURCE,
        },
    }


def print_inspect(model: LoadedModel, console: Console) -> None:
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
    console.print(f"[dim]source: {SOURCE}[/dim]")
