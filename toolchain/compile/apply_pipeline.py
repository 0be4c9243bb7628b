"""``hanasc apply``: materialize a Config with the real passes, compile for the host, write the result."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hanasc.compile.onnx_rewrite import export_architecture
from hanasc.core.atomic import atomic_dir
from hanasc.core.errors import HanascError
from hanasc.core.relax_params import weights_of
from hanasc.frontend.calibration import ActivationRanges, calibrate
from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import Config, ConfigError
from hanasc.passes.depth import residual_blocks
from hanasc.passes.materialize import check_layer_names
from hanasc.passes.separable import separable_errors
from hanasc.recovery.bias_correction import materialize_recovered, ranges_for_replay, refitted_layers
from hanasc.recovery.finetune import TUNED_WEIGHTS_FILE, load_tuned, save_tuned
from hanasc.targets import host
from hanasc.targets.base import BundleInputs
from hanasc.targets.pipelines import collect_build_reports
from hanasc.targets.quiet import export_library
from hanasc.targets.registry import check_choices, get_target

CALIBRATION_SAMPLES = 64


@dataclass
class LayerChange:
    """One changed layer: its choices and its weight bytes before and after."""

    name: str
    op: str
    choices: dict
    bytes_before: int
    bytes_after: int


@dataclass
class ApplySummary:
    model: str
    config: dict
    layers: list[LayerChange]
    weight_bytes_before: int
    weight_bytes_after: int
    library: str
    library_bytes: int
    bundle: dict | None = None
    build: dict | None = None  # what the host build fell back on (hanasc.targets.pipelines.BuildReport)
    build_line: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["source"] = "weight bytes counted from the materialized module's parameters (not measured)"
        return data

    def to_markdown(self) -> str:
        lines = [
            f"# hanasc apply: {Path(self.model).name}",
            "",
            f"Weight bytes: {self.weight_bytes_before:,} -> {self.weight_bytes_after:,} "
            f"({self.weight_bytes_after / max(self.weight_bytes_before, 1):.1%}); library "
            f"`{self.library}` {self.library_bytes:,} bytes (host build).",
            "",
            *([self.build_line, ""] if self.build_line else []),
            "| layer | op | choices | weight bytes before | after |",
            "|---|---|---|---:|---:|",
        ]
        for c in self.layers:
            choices = ", ".join(f"{k}={v}" for k, v in c.choices.items())
            lines.append(f"| {c.name} | {c.op} | {choices} | {c.bytes_before:,} | {c.bytes_after:,} |")
        if self.config.get("skip"):
            lines += ["", f"Skipped residual blocks: {', '.join(self.config['skip'])}"]
        return "\n".join(lines) + "\n"


def needs_calibration(config: Config) -> bool:
    return any(choice.a_bits == 8 for choice in config.layers.values())


def calibrate_for(
    model: LoadedModel,
    config: Config,
    data: np.ndarray | dict[str, np.ndarray] | None,
    method: str = "minmax",
    ranges_file: Path | None = None,
):
    """Activation ranges, input means and covariances (int8 activations, recovery): from a saved ranges file
    (what ``hanasc compile`` used, so the replay is exact), else from data; None when neither is given and
    the Config quantizes no activation."""
    if data is None and ranges_file is not None and ranges_file.is_file():
        return ActivationRanges.load(ranges_file)
    if data is None:
        if not needs_calibration(config):
            return None
        layer = next(name for name, c in config.layers.items() if c.a_bits == 8)
        raise ConfigError(f"layer '{layer}' asks for a_bits=8: give --data to calibrate activation ranges")

    return calibrate(model, [first_samples(data)], method=method)


def first_samples(data, n: int = CALIBRATION_SAMPLES):
    """The first ``n`` samples of one input's array, or of every input's (input name -> array)."""
    if isinstance(data, dict):
        return {name: x[:n] for name, x in data.items()}
    return data[:n]


def _bytes_by_layer(weights: dict[str, np.ndarray], layer: str) -> int:
    return sum(v.nbytes for k, v in weights.items() if k.startswith(layer + "."))


def _layer_choices(model: LoadedModel, config: Config) -> dict[str, dict]:
    """The changed choices of every changed layer; layers of skipped blocks say so."""
    choices = {name: dict(c) for name, c in config.to_json()["layers"].items()}
    separable = [name for name, c in config.layers.items() if c.separable]
    for name, error in separable_errors(model.mod, separable).items():
        choices[name]["separable_rel_error"] = round(error, 4)  # ||W - W'||_F / ||W||_F of the decomposition
    for block in residual_blocks(model.mod["main"]):
        if block.name in config.skip:
            for layer in block.layers:
                choices.setdefault(layer, {})["skipped_block"] = block.name
    return choices


def bundle_inputs(model: LoadedModel, config: Config, mod, out: Path, data) -> BundleInputs:
    """What any target's bundle is built from: the materialized Relax module with probe inputs, or (built
    on demand, for targets built from ONNX) the cleaned ONNX with the Config's architecture choices written
    back into it (:mod:`hanasc.compile.onnx_rewrite`), and calibration samples."""
    return BundleInputs(
        out_dir=out,
        relax_mod=mod,  # weights as parameters: integer weights stay packed in the library
        probe_inputs=[model.example_inputs(seed=7)[spec.name] for spec in model.inputs],
        onnx=lambda: export_architecture(model, config),
        calibration=first_samples(data) if data is not None else None,
    )


def build_target_bundle(info, model: LoadedModel, config: Config, mod, out: Path, data, ranges) -> dict:
    """The target's deployable bundle in ``out`` (:meth:`hanasc.targets.base.Target.bundle`)."""
    return info.bundle(bundle_inputs(model, config, mod, out, data)).to_json()


def read_tuned(model: LoadedModel, path: Path) -> dict[str, np.ndarray]:
    """Fine-tuned values from ``path``, checked against ``model``'s weights (names, shapes)."""
    try:
        tuned = load_tuned(path)
    except Exception as exc:
        raise HanascError(f"{path}: not a readable .npz of weights ({type(exc).__name__})") from None
    weights = model.weights()
    for name, value in tuned.items():
        if name not in weights:
            raise HanascError(f"{path}: '{name}' is not a weight of {model.path.name}")
        if value.shape != weights[name].shape:
            raise HanascError(
                f"{path}: '{name}' has shape {value.shape}, the model's weight {weights[name].shape}"
            )
    return tuned


def apply_config(
    model: LoadedModel,
    config: Config,
    out: Path,
    data: np.ndarray | dict[str, np.ndarray] | None = None,
    target: str = "host",
    ranges_file: Path | None = None,
    tuned_file: Path | None = None,
) -> ApplySummary:
    """Materialize ``config``, build for the host (and ``target``'s bundle), write ``out/`` atomically.
    ``tuned_file`` (when it exists): fine-tuned weight values that replace the data-light recovery's."""
    info = get_target(target)
    check_layer_names(config, model.mod)
    check_choices(info, config, model.layers)
    ranges = calibrate_for(model, config, data, ranges_file=ranges_file)
    tuned = read_tuned(model, tuned_file) if tuned_file is not None and tuned_file.is_file() else None
    if tuned is not None:
        info.check_tuned_weights(str(tuned_file))
    new_mod = materialize_recovered(model, config, ranges, tuned)
    before, after = weights_of(model.mod), weights_of(new_mod)
    with collect_build_reports() as builds:
        executable = host.build_artifact(new_mod)
    changes = [
        LayerChange(
            name=layer.name,
            op=layer.op,
            choices=config.to_json()["layers"][layer.name],
            bytes_before=_bytes_by_layer(before, layer.name),
            bytes_after=_bytes_by_layer(after, layer.name),
        )
        for layer in model.layers
        if not config.choice(layer.name).is_identity()
        or any(layer.name.startswith(s + ".") for s in config.skip)
    ]
    with atomic_dir(Path(out)) as tmp:
        # exported before it runs (a run changes an executable's exported bytes), as compile's builds are
        export_library(executable, tmp / "model.so")
        host.run(executable, list(model.example_inputs().values()))  # it runs before anything is in place
        config.save(tmp / "config.json")
        if tuned is not None:
            save_tuned(tmp / TUNED_WEIGHTS_FILE, tuned)
        if ranges is not None:
            refitted = refitted_layers(model, config, ranges)
            ranges_for_replay(ranges, refitted).save(tmp / "activation_ranges.json")
        summary = ApplySummary(
            model=str(model.path),
            config=config.to_json(),
            layers=changes,
            weight_bytes_before=sum(v.nbytes for v in before.values()),
            weight_bytes_after=sum(v.nbytes for v in after.values()),
            library="model.so",
            library_bytes=(tmp / "model.so").stat().st_size,
            build=builds[-1].to_json() if builds else None,
            build_line=builds[-1].line() if builds else "",
        )
        inputs = replace(bundle_inputs(model, config, new_mod, tmp / info.name, data), executable=executable)
        bundle = info.device_bundle(inputs)
        summary.bundle = bundle.to_json() if bundle is not None else None  # beside the host library
        (tmp / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        (tmp / "summary.md").write_text(summary.to_markdown())
    return summary
