"""The cost-model commands of ``hanasc``: ``profile`` (kernels on a target, the latency model), ``costs``
(latency, energy and memory of models with their provenance) and ``calibrate`` (device calibration from
whole-model timings): options, then :mod:`hanasc.api`'s job, then its result printed. Registered on the
Typer app by :mod:`hanasc.cli.app`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hanasc import api
from hanasc.cli.common import InputShapeOpt
from hanasc.cli.common import console as _console
from hanasc.core.errors import HanascError
from hanasc.targets.registry import get_target


def profile(
    target: Annotated[str, typer.Option("--target", "-t", help="Target name (see `hanasc targets`).")],
    rpc: Annotated[str | None, typer.Option(help="TVM RPC server HOST:PORT of the device.")] = None,
    tracker: Annotated[str | None, typer.Option(help="TVM RPC tracker HOST:PORT.")] = None,
    key: Annotated[str | None, typer.Option(help="Device key at the tracker.")] = None,
    budget_minutes: Annotated[float, typer.Option(help="Time budget for profiling.")] = 10.0,
    model: Annotated[str | None, typer.Option(help="ONNX model whose search space to profile first.")] = None,
    db: Annotated[
        Path | None, typer.Option(help="Profile store (SQLite); default in the hanasc cache.")
    ] = None,
    networks: Annotated[
        int,
        typer.Option(
            min=0,
            help="Instead of the kernel sweep: time this many architectures of --model's search space kernel "
            "by kernel inside their shipped builds (targets that run on this CPU; ~20 s each).",
        ),
    ] = 0,
) -> None:
    """Profile kernels on the target (locally, or on a device over TVM RPC) and train its latency model.

    Examples:

      hanasc profile --target host --budget-minutes 5

      hanasc profile --target host --model model.onnx --networks 30

      hanasc profile --target cortex-a78 --rpc 192.168.1.20:9090 --model model.onnx

      hanasc profile --target jetson-orin --tracker 10.0.0.2:9190 --key orin
    """
    options = dict(locals())  # the API's keyword arguments are the options' names
    from rich.progress import Progress

    name = get_target(target).name
    with Progress(console=_console(stderr=True)) as bar:
        task = bar.add_task(f"profiling {name}", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"profiling {name}: {label}")

        try:
            result = api.profile(**options, progress=progress)
        except HanascError:
            bar.live.transient = True  # an error is one line on stderr: the bar is cleared
            raise
    print(result.table())


def costs(
    models: Annotated[list[str], typer.Argument(help="ONNX files, or zoo names (several in one call).")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target name.")] = "host",
    device: Annotated[
        str | None, typer.Option(help="Device whose calibration applies (see `hanasc calibrate --device`).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Config JSON to apply first.")] = None,
    data: Annotated[Path | None, typer.Option(help=".npz calibration data (for a_bits=8).")] = None,
    memory: Annotated[bool, typer.Option("--memory", help="Also estimate memory (slower).")] = False,
    confidence: Annotated[
        float, typer.Option(help="Confidence of the latency interval (calibrated targets).")
    ] = 0.9,
    threads: Annotated[int | None, typer.Option(help="Runner threads on the device (default: spec).")] = None,
    input_shape: InputShapeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimated latency per kernel and in total (with an interval once calibrated), energy, and memory with
    --memory; each figure with its provenance.

    Examples:

      hanasc costs model.onnx --target host

      hanasc costs a.onnx b.onnx c.onnx --target cortex-a78 --device pixel7 --json

      hanasc costs efficientnet-lite0 --target cortex-a78 --config config.json --data calib.npz --memory
    """
    options = {k: v for k, v in locals().items() if k not in ("models", "as_json")}
    result = api.costs(models, **options)
    if as_json:
        payload = [m.to_json() for m in result.models]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        print(result.table())


def calibrate(
    measurements: Annotated[
        Path | None,
        typer.Argument(help="CSV: model,ms[,threads][,runtime] (model paths relative to the CSV)."),
    ] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target name.")] = "host",
    device: Annotated[
        str, typer.Option(help="Device name: one calibration is kept per device (used by costs/compile).")
    ] = "default",
    base: Annotated[str, typer.Option(help="What to calibrate: auto, prior or model.")] = "auto",
    export: Annotated[
        Path | None, typer.Option("--export", help="Write the device's calibration to this file.")
    ] = None,
    import_: Annotated[
        Path | None, typer.Option("--import", help="Install a calibration file (for --device, or its own).")
    ] = None,
    input_shape: InputShapeOpt = None,
) -> None:
    """Calibrate a target's latency estimates for one device from whole-model timings taken on it.

    Time each model on the device with any runtime (median of repeated runs), list them in a CSV, and
    run this; `hanasc costs` and `hanasc compile` then use the calibration (see docs/costs.md).

    Examples:

      hanasc calibrate --target cortex-a78 --device pixel7 measurements.csv

      hanasc calibrate --target cortex-a78 --device pixel7 --export pixel7.json

      hanasc calibrate --import pixel7.json
    """
    result = api.calibrate(**locals())  # the API's keyword arguments are the options' names
    if result.action == "exported":
        print(f"wrote {result.path}")
        return
    if result.action == "installed":
        print(f"installed the calibration of '{result.target}' for device '{result.device}'")
    print(result.table)
