"""The ``hanasc`` command line: one Typer command per verb over the Python API (:mod:`hanasc.api`): options
are parsed, the API called, its result printed; bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from hanasc import api
from hanasc.cli import compile_command as cli_compile
from hanasc.cli import costs_command as cli_costs
from hanasc.cli import simulate_command as cli_simulate
from hanasc.cli.common import InputShapeOpt, Interrupted, InterruptWatch
from hanasc.cli.common import console as _console
from hanasc.cli.inspect_view import print_inspect
from hanasc.cli.targets_view import targets_json
from hanasc.core.errors import HanascError
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
    result = api.inspect(model, input_shape=input_shape)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_inspect(result, _console())


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
            help=".npz of the model's input(s) (keyed by input name, or x): calibration data for a_bits=8 "
            "layers (default: the activation_ranges.json beside CONFIG, as `hanasc compile` writes it)."
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
    result = api.apply(model, config, out=out, data=data, target=target, input_shape=input_shape)
    console = _console()
    console.print(result.markdown)
    bundle = f", {result.artifact.bundle.name}/ bundle" if result.artifact.bundle else ""
    tuned = ", tuned_weights.npz (fine-tuned weights replayed)" if result.tuned_weights_replayed else ""
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


# simulate: a shipped Arm artifact's latency from qemu block counts x llvm-mca (hanasc.cli.simulate_command)
app.command()(cli_simulate.simulate)


# compile, demo: the main job (hanasc.cli.compile_command)
app.command(name="compile")(cli_compile.compile_)
app.command()(cli_compile.demo)


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
