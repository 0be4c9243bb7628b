"""``hanasc simulate``: the latency of a shipped CPU artifact from qemu block counts x llvm-mca cycles."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from hanasc.cli.common import InputShapeOpt
from hanasc.cli.common import console as _console
from hanasc.core.errors import HanascError
from hanasc.cost_models.simulation.cores import core_for
from hanasc.cost_models.simulation.report import Simulation
from hanasc.cost_models.simulation.simulate import simulate_bundle
from hanasc.frontend.model_zoo import resolve_model_arg
from hanasc.frontend.onnx_loader import parse_input_shape
from hanasc.targets.bundle import MANIFEST


def simulate(
    artifact: Annotated[
        str,
        typer.Argument(
            help="A bundle folder (bundle.json), a `hanasc apply` output folder holding one, an ONNX file "
            "or a zoo name (then built as `hanasc apply` builds it)."
        ),
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="The core to simulate.")] = "cortex-a78",
    config: Annotated[
        Path | None, typer.Option(help="Config JSON to apply to a model first (default: the original).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    input_shape: InputShapeOpt = None,
) -> None:
    """Simulate one inference of the shipped artifact on a core: qemu counts its blocks, llvm-mca costs them.

    Cycles and milliseconds (at the target spec's clock, one core) per kernel and in total; the memory
    term (roofline of bytes moved per kernel) beside them, when the model is known.

    Examples:

      hanasc simulate efficientnet-lite0 --target cortex-a78

      hanasc simulate model.onnx --config int8.json --json

      hanasc simulate a78/cortex-a78/ --target cortex-a78
    """
    core = core_for(target)
    path = Path(artifact)
    if config is not None and not config.is_file():
        raise HanascError(f"--config {config}: no such file")
    with _console(stderr=True).status(f"simulating {path.name} on {core.target} (qemu + llvm-mca)"):
        if path.is_dir():
            sim = _simulate_folder(path, core, input_shape)
        else:
            sim = _simulate_model(artifact, config, core, input_shape)
    if as_json:
        print(json.dumps(sim.to_json(), indent=2))
    else:
        console = _console()
        for line in sim.lines():
            console.print(line, highlight=False, markup=False)


def _simulate_folder(folder: Path, core, input_shape: list[str] | None) -> Simulation:
    """A bundle folder, or a `hanasc apply` output whose <target>/ subfolder is one (then the memory term
    comes from its model and config.json)."""
    if (folder / MANIFEST).is_file():
        sim = simulate_bundle(folder, core)
        sim.notes.append("memory term: not computed for a bare bundle (simulate the model to get it)")
        return sim
    inner = folder / core.target
    if not (inner / MANIFEST).is_file():
        raise HanascError(
            f"{folder}: neither a bundle (no {MANIFEST}) nor an apply output with {core.target}/"
        )
    sim = simulate_bundle(inner, core)
    summary = folder / "summary.json"
    model_path = Path(json.loads(summary.read_text())["model"]) if summary.is_file() else None
    if model_path is None or not model_path.is_file() or not (folder / "config.json").is_file():
        sim.notes.append(f"memory term: not computed ({folder} names no readable model and config.json)")
        return sim
    from hanasc.frontend.loading import load_model  # deferred: loading a model imports TVM

    loaded = load_model(model_path, _shapes(input_shape))
    return _with_memory(sim, loaded, folder / "config.json", core.target)


def _simulate_model(model: str, config: Path | None, core, input_shape: list[str] | None) -> Simulation:
    """Build the model's bundle as `hanasc apply` does (into a temporary folder), then simulate it."""
    from hanasc.compile.apply_pipeline import apply_config  # deferred: TVM, only when a model is built
    from hanasc.frontend.loading import load_model
    from hanasc.passes.config import Config

    loaded = load_model(resolve_model_arg(model), _shapes(input_shape))
    policy = Config.load(config) if config is not None else Config()
    ranges = config.parent / "activation_ranges.json" if config is not None else None
    with tempfile.TemporaryDirectory(prefix="hanasc-simulate-") as scratch:
        out = Path(scratch) / "apply"
        apply_config(loaded, policy, out, None, target=core.target, ranges_file=ranges)
        sim = simulate_bundle(out / core.target, core)
    return _with_memory(sim, loaded, config, core.target)


def _shapes(input_shape: list[str] | None) -> dict:
    return dict(parse_input_shape(s) for s in input_shape or [])


def _with_memory(sim: Simulation, loaded, config: Path | None, target: str) -> Simulation:
    from hanasc.compile.apply_pipeline import calibrate_for  # deferred: TVM, only when a model is built
    from hanasc.cost_models.simulation.memory_term import with_memory_term
    from hanasc.passes.config import Config
    from hanasc.recovery.bias_correction import materialize_recovered

    policy = Config.load(config) if config is not None else Config()
    ranges_file = config.parent / "activation_ranges.json" if config is not None else None
    ranges = calibrate_for(loaded, policy, None, ranges_file=ranges_file)
    return with_memory_term(sim, materialize_recovered(loaded, policy, ranges), target)
