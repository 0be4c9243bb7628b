"""The ``hanasc`` command line: one Typer command per verb; bad input exits 2 with one line."""

from __future__ import annotations

import json
import sys
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


def _console() -> Console:
    """A console that does not squeeze tables when the output is piped."""
    return Console() if sys.stdout.isatty() else Console(width=200)


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
        Path | None, typer.Option(help=".npz with x (and y): calibration data for a_bits=8 layers.")
    ] = None,
    input_shape: InputShapeOpt = None,
) -> None:
    """Materialize a Config with the real passes, compile it for the host, write the library and a summary.

    Examples:

      hanasc apply model.onnx config.json --out transformed/

      hanasc apply efficientnet-lite0 int8.json --data calib.npz --out effnet-int8/
    """
    from hanasc.apply_pipeline import apply_config
    from hanasc.datasets import load_npz
    from hanasc.passes.config import Config

    loaded = _load(model, input_shape)
    policy = Config.load(config)
    samples = load_npz(data, loaded.inputs[0]).x if data is not None else None
    summary = apply_config(loaded, policy, out, samples)
    console = _console()
    console.print(summary.to_markdown())
    console.print(f"wrote {out}/ (model.so, config.json, summary.json, summary.md)")


@app.command()
def demo() -> None:
    """Run the main job on the bundled default model (EfficientNet-Lite0 with ImageNet weights).

    Example:

      hanasc demo
    """
    from hanasc.inspect_view import print_inspect
    from hanasc.model_zoo import fetch

    console = _console()
    path = fetch("efficientnet-lite0")
    console.print(f"EfficientNet-Lite0 (ImageNet weights) at {path}")
    print_inspect(_load(str(path), None), console)


def main() -> None:
    """Entry point: run the app; a HanascError becomes one line on stderr and exit code 2."""
    try:
        app()
    except HanascError as exc:
        print(f"hanasc: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
