"""``hanasc.apply``: materialize a Config with the real passes, build it, write the library (and the
target's bundle) and a summary; a typed result."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from hanasc.api.data import calibration_samples
from hanasc.api.options import InputShapes, ModelArg, load
from hanasc.api.results import ApplyResult, Artifact, LayerChangeRow, frozen_mapping
from hanasc.compile.apply_pipeline import apply_config
from hanasc.passes.config import Config
from hanasc.recovery.finetune import TUNED_WEIGHTS_FILE

RANGES_FILE = "activation_ranges.json"


def apply(
    model: ModelArg,
    config: Config | str | PathLike,
    *,
    out: str | PathLike,
    data: str | PathLike | None = None,
    target: str = "host",
    input_shape: InputShapes = None,
    replay_dir: str | PathLike | None = None,
) -> ApplyResult:
    """Materialize ``config`` (a Config, or its JSON file) on ``model``, build it for the host and write
    ``out/`` (model.so, config.json, summary.json, summary.md; with ``target``, its bundle in
    ``out/<target>/``).

    ``data``: an ``.npz`` of the model's inputs for activation ranges (layers with ``a_bits=8``). Without
    it, the ``activation_ranges.json`` in ``replay_dir`` (default: the folder of a Config file, as
    ``hanasc compile`` writes it) is replayed, and ``tuned_weights.npz`` there (fine-tuned weights): a
    compile's Config applied this way builds the same library, byte for byte.
    """
    loaded = load(model, input_shape)
    policy = config if isinstance(config, Config) else Config.load(Path(config))
    folder = Path(replay_dir) if replay_dir is not None else None
    if folder is None and not isinstance(config, Config):
        folder = Path(config).parent
    summary = apply_config(
        loaded,
        policy,
        Path(out),
        calibration_samples(loaded, data),
        target=target,
        ranges_file=folder / RANGES_FILE if folder else None,
        tuned_file=folder / TUNED_WEIGHTS_FILE if folder else None,
    )
    bundle = summary.bundle["target"] if summary.bundle else None
    as_json = summary.to_json()
    return ApplyResult(
        config=policy,
        layers=tuple(
            LayerChangeRow(c.name, c.op, frozen_mapping(c.choices), c.bytes_before, c.bytes_after)
            for c in summary.layers
        ),
        weight_bytes_before=summary.weight_bytes_before,
        weight_bytes_after=summary.weight_bytes_after,
        artifact=Artifact.in_folder(Path(out), summary.library, bundle, "summary"),
        tuned_weights_replayed=(Path(out) / TUNED_WEIGHTS_FILE).is_file(),
        build=frozen_mapping(summary.build),
        summary=frozen_mapping(as_json),
        markdown=summary.to_markdown(),
    )
