"""The cost-model commands of ``hanasc``: ``profile`` (kernels on a target, the latency model), ``costs``
(latency, energy and memory of models with their provenance) and ``calibrate`` (device calibration from
whole-model timings). Registered on the Typer app by :mod:`hanasc.cli.app`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from hanasc.cli.common import InputShapeOpt
from hanasc.cli.common import console as _console
from hanasc.cli.common import load_cli_model as _load
from hanasc.core.errors import HanascError
from hanasc.cost_models.target_info import get_target as cost_target
from hanasc.frontend.datasets import load_npz
from hanasc.frontend.model_zoo import resolve_model_arg
from hanasc.frontend.onnx_loader import parse_input_shape
from hanasc.targets.registry import check_choices, get_target


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
    from rich.progress import Progress

    from hanasc.compile.profile_job import ProfilePlan, Session, profile_target

    info = get_target(target)
    session = Session.from_address(rpc_addr=rpc, tracker=tracker, key=key)

    with Progress(console=_console(stderr=True)) as bar:
        task = bar.add_task(f"profiling {info.name}", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"profiling {info.name}: {label}")

        plan = ProfilePlan(
            model=str(resolve_model_arg(model)) if model else None,
            budget_minutes=budget_minutes,
            networks=networks,
        )
        try:
            summary = profile_target(info.name, plan, session=session, db=db, progress=progress)
        except HanascError:
            bar.live.transient = True  # an error is one line on stderr: the bar is cleared
            raise
    print(summary.table())


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
    if not 0.5 <= confidence < 1.0:
        raise HanascError(f"--confidence {confidence:g}: must be in [0.5, 1)")
    if threads is not None and threads <= 0:
        raise HanascError(f"--threads {threads}: must be positive")
    name = cost_target(target).name
    policy = None
    if config is None:
        _import_tvm_without_torch()  # latency of the model as is: torch is not needed
    else:
        from hanasc.passes.config import Config

        policy = Config.load(config)
    from hanasc.cost_models.estimate import CostContext, estimate_costs

    ctx = CostContext(device=device)
    reports = []
    for model in models:
        mod = _costs_module(model, input_shape, policy, data, target)
        reports.append(estimate_costs(mod, name, ctx, memory=memory, confidence=confidence, threads=threads))
    if as_json:
        payload = [r.to_json() | {"model": m} for r, m in zip(reports, models, strict=True)]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        print("\n\n".join(f"{m}\n{r.table()}" if len(models) > 1 else r.table()
                          for r, m in zip(reports, models, strict=True)))  # fmt: skip


def _import_tvm_without_torch() -> None:
    """Import TVM while ``import torch`` fails (tvm_ffi imports torch eagerly: 3-4 s of a costs call), when
    neither is imported yet; later ``import torch`` works as usual."""
    if "tvm" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tvm  # noqa: F401
    finally:
        del sys.modules["torch"]


def _costs_module(model: str, input_shape: list[str] | None, policy, data: Path | None, target: str):
    """The module ``hanasc costs`` estimates: the model as is, or with ``policy`` materialized; weights stay
    parameters, so that the cost model's lowering binds them as the build does (integer weights late: the
    dot-product kernels and their prepacked weights exist only then)."""
    loaded = _load(model, input_shape)
    if policy is None:
        return loaded.mod
    from hanasc.compile.apply_pipeline import calibrate_for
    from hanasc.recovery.bias_correction import materialize_recovered

    check_choices(get_target(target), policy, loaded.layers)
    samples = load_npz(data, loaded.inputs[0]).x if data is not None else None
    return materialize_recovered(loaded, policy, calibrate_for(loaded, policy, samples))


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
    if base not in ("auto", "prior", "model"):
        raise HanascError(f"--base {base}: auto, prior or model")
    if sum(x is not None for x in (measurements, export, import_)) != 1:
        raise HanascError("calibrate: give a measurements CSV, --export FILE or --import FILE (one of them)")
    from hanasc.cost_models import device_timings
    from hanasc.cost_models.estimate import CostContext

    name = cost_target(target).name
    ctx = CostContext(device=device if import_ is None or device != "default" else None)
    if import_ is not None:
        cal = device_timings.import_calibration(import_, ctx)
        print(f"installed the calibration of '{cal.target}' for device '{cal.device}'")
        print(device_timings.calibration_table(cal, cal.target))
        return
    if export is not None:
        out = device_timings.export_calibration(name, ctx, export)
        print(f"wrote {out}")
        return
    shapes = dict(parse_input_shape(s) for s in input_shape or [])
    cal = device_timings.calibrate(
        name, device_timings.read_measurements_csv(measurements), ctx, base, shapes or None
    )
    print(device_timings.calibration_table(cal, name))
