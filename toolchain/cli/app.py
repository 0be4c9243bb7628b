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

from hanasc.cli import costs_command as cli_costs
from hanasc.cli.common import InputShapeOpt, Interrupted, InterruptWatch
from hanasc.cli.common import console as _console
from hanasc.cli.common import load_cli_model as _load
from hanasc.cli.inspect_view import inspect_json, print_inspect
from hanasc.cli.targets_view import targets_json
from hanasc.core.errors import HanascError
from hanasc.frontend.datasets import load_npz
from hanasc.frontend.model_zoo import ZOO, fetch, zoo_path

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

    With --target, the target's deployable bundle is written too (in OUT/<target>/). Fine-tuned weights
    (tuned_weights.npz beside CONFIG, as `hanasc compile --finetune-minutes` writes them) are replayed.

    Examples:

      hanasc apply model.onnx config.json --out transformed/

      hanasc apply efficientnet-lite0 int8.json --data calib.npz --out effnet-int8/

      hanasc apply model.onnx config.json --target cortex-a78 --out a78/
    """
    from hanasc.compile.apply_pipeline import apply_config
    from hanasc.passes.config import Config

    loaded = _load(model, input_shape)
    policy = Config.load(config)
    samples = load_npz(data, loaded.inputs[0]).x if data is not None else None
    # compile writes activation_ranges.json beside config.json: a compiled Config replays without --data
    summary = apply_config(
        loaded,
        policy,
        out,
        samples,
        target=target,
        ranges_file=config.parent / "activation_ranges.json",
        tuned_file=config.parent / "tuned_weights.npz",
    )
    console = _console()
    console.print(summary.to_markdown())
    bundle = f", {summary.bundle['target']}/ bundle" if summary.bundle else ""
    replayed = (out / "tuned_weights.npz").is_file()
    tuned = ", tuned_weights.npz (fine-tuned weights replayed)" if replayed else ""
    console.print(f"wrote {out}/ (model.so, config.json, summary.json, summary.md{tuned}{bundle})")


@app.command()
def targets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the targets: TVM target JSON, allowed choices, cost-model status.

    Examples:

      hanasc targets

      hanasc targets --json
    """
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


# profile, costs, calibrate: the cost-model commands (hanasc.cli.costs_command)
app.command()(cli_costs.profile)
app.command()(cli_costs.costs)
app.command()(cli_costs.calibrate)


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
    verify_limit: Annotated[
        int,
        typer.Option(
            min=1,
            help="Candidates built and measured, best held-out first, before giving up (each costs a build "
            "and a timing: seconds to a minute or two).",
        ),
    ] = 6,
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
    finetune_minutes: Annotated[
        float,
        typer.Option(
            help="Recovery by fine-tuning: distil the original into the best candidates for this many "
            "minutes in all (on --train-data, else the calibration split; labels when the metric uses them); "
            "resumable with --resume."
        ),
    ] = 0.0,
    finetune_candidates: Annotated[
        int, typer.Option(help="How many of the best candidates share the fine-tuning minutes.")
    ] = 2,
    train_data: Annotated[
        str | None,
        typer.Option(
            help="Fine-tuning data, same formats as --data (labels used when the metric uses them): "
            "fine-tuning learns from it instead of the calibration split. Needs --finetune-minutes."
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
    from hanasc.cli.compile_command import CompileRequest, run_compile

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
        verify_limit=verify_limit,
        device=device,
        budget_confidence=budget_confidence,
        finetune_minutes=finetune_minutes,
        finetune_candidates=finetune_candidates,
        train_data=train_data,
    )
    run_compile(_load(model, input_shape), request, _console(), _console(stderr=True))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("hanasc-demo"),
    budget_fraction: Annotated[
        float | None,
        typer.Option(
            help="Budget as a share of the original's latency (default: 0.6 where the CPU runs int8 on "
            "AVX512-VNNI, else 0.8)."
        ),
    ] = None,
    max_loss: Annotated[
        float, typer.Option(help="Accuracy floor: agreement points the result may lose (0.9 kept at 10).")
    ] = 10.0,
) -> None:
    """Run the main job on the bundled default: EfficientNet-Lite0 (ImageNet weights) for the host.

    Measures the original, then compiles with a budget of 0.6 of its measured latency (0.8 on CPUs without
    AVX512-VNNI int8 kernels) and an accuracy floor of agreement 0.9, using the labelled ImageNet images
    that ship in the foolbox package (5 crop/flip views each).

    Example:

      hanasc demo
    """
    from hanasc.cli.compile_command import run_demo

    run_demo(out, budget_fraction, max_loss, _console(), _console(stderr=True))


def main() -> None:
    """Entry point: run the app; bad input becomes one line on stderr and exit code 2.

    A :class:`HanascError` (a file, node or option the user can fix) exits 2. Running out of memory ends
    with one line too (exit 1), Ctrl-C with one line and exit code 130. Any other exception is a bug in
    hanasc: one line that says so (exit 1), or the full traceback with ``HANASC_DEBUG=1``.
    """
    watch = InterruptWatch()
    signal.signal(signal.SIGINT, watch.handler)
    stopped = "interrupted (Ctrl-C); outputs are renamed into place only when complete"
    try:
        app()
    except Interrupted:
        _fail(stopped, 130)
    except HanascError as exc:
        # a Ctrl-C that landed inside TVM comes back as TVM's own error (and may be reported as ours)
        if watch.received:
            _fail(stopped, 130)
        _fail(f"error: {exc}", exc.exit_code)
    except MemoryError:
        _fail("error: out of memory (try a smaller --input-shape or model)", 1)
    except Exception as exc:
        if watch.received:
            _fail(stopped, 130)
        if os.environ.get("HANASC_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        _fail(
            f"internal error: {type(exc).__name__}: {reason} (at {Path(where.filename).name}:{where.lineno}; "
            "a bug in hanasc: rerun with HANASC_DEBUG=1 for the traceback)",
            1,
        )


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    print(f"hanasc: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
