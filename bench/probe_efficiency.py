"""Measure kernel efficiencies on this machine through the shipped pipeline and fit the efficiency model
(:mod:`hanasc.cost_models.efficiency_probe`): the developer tool that writes
``cost_models/specs/efficiency-host.json``.

    python bench/probe_efficiency.py [--layers 130] [--activations 40] [--networks N] [--out PATH]
    python bench/probe_efficiency.py --refit SAMPLES.jsonl --out PATH   # no new measurement

``--networks N`` adds N architectures of each zoo model's search space, every kernel in its network context.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import hanasc
from hanasc.cost_models import efficiency_probe
from hanasc.cost_models.efficiency import cache_path
from hanasc.frontend.calibration import calibrate
from hanasc.frontend.model_zoo import fetch
from hanasc.frontend.onnx_loader import graph_inputs, read_onnx
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.materialize import materialize
from hanasc.search.architecture_samples import mixed_genome
from hanasc.search.space import build_space

NETWORK_MODELS = ("mobilenetv3-small", "squeezenet1.1", "resnet18", "unet-tiny")
NETWORK_SIZE = 96  # input height and width of the network probes


def network_probes(per_model: int, seed: int = 0, models: tuple[str, ...] = NETWORK_MODELS):
    """``(label, module)`` of architectures sampled from zoo models' search spaces
    (:func:`hanasc.search.architecture_samples.mixed_genome`; the first of each model is the original, the
    second uniform W8A8): every kernel in its network context (int8 inputs from an int8 producer, blocked
    neighbours), which single-layer probes do not have (their int8 layer quantizes a float input)."""
    rng = np.random.default_rng(seed + 3)
    for name in models:
        path = fetch(name)
        inputs = graph_inputs(read_onnx(path))
        model = hanasc.load_model(path, {i.name: (1, 3, NETWORK_SIZE, NETWORK_SIZE) for i in inputs})
        space = build_space(model)
        shape = model.inputs[0].shape
        ranges = calibrate(model, [rng.standard_normal(shape).astype("float32") for _ in range(4)])
        uniform = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
        for i in range(per_model):
            config = Config() if i == 0 else uniform if i == 1 else space.decode(mixed_genome(space, rng))
            yield f"{name}@{NETWORK_SIZE}/n{i}", materialize(model.mod, config, ranges)


def main() -> None:
    """Probe (or refit from kept samples) and write the efficiency model."""
    import argparse

    parser = argparse.ArgumentParser(
        description=efficiency_probe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--activations", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: <cache>/efficiency.json")
    parser.add_argument("--refit", type=Path, default=None, help="fit from kept samples (reference: --out's)")
    parser.add_argument("--unpack", type=int, default=20, help="probes unpacking 4/2-bit weights")
    parser.add_argument("--add-to", type=Path, default=None, help="kept samples to add the new ones to")
    parser.add_argument(
        "--networks", type=int, default=0, help="architectures per zoo model timed kernel by kernel"
    )
    args = parser.parse_args()
    if args.refit is not None:
        from hanasc.cost_models.efficiency import SHIPPED

        source = args.out if args.out and args.out.is_file() else SHIPPED
        reference = json.loads(source.read_text())["reference"]
        model = efficiency_probe.refit(args.refit, reference)
    else:
        added = None
        if args.add_to is not None:
            source = args.out if args.out and args.out.is_file() else SHIPPED
            added = (efficiency_probe.load_samples(args.add_to), json.loads(source.read_text())["reference"])
        model = efficiency_probe.measure_and_fit(
            args.layers,
            args.activations,
            args.seed,
            n_unpack=args.unpack,
            add_to=added,
            extra_modules=tuple(network_probes(args.networks, args.seed)) if args.networks else (),
        )
    out = args.out or cache_path()
    model.save(out)
    print(f"wrote {out}: {model.name}")
    for key, c in model.curves.items():
        print(
            f"  {key:<18} compute {c.compute_eff:6.3f}  memory {c.memory_eff:8.3f}  fixed "
            f"{c.fixed_s * 1e6:6.2f} us  n={c.n:<4} rmse(log) {c.rmse_log:.2f}"
        )


if __name__ == "__main__":
    main()
