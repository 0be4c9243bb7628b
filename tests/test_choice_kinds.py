"""Each choice kind is declared once (passes/kinds/, one module per kind) and its three forms agree: the
Relax pass (materialized, built with TVM), the simulation (the compile-once simulator on the original graph)
and, where it has one, the ONNX rewrite (onnxruntime on the exported graph)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from test_simulator import assert_agree, block_names, calibration, materialized_outputs

import hanasc
from hanasc.compile import onnx_rewrite
from hanasc.passes.config import Config, LayerChoice, choice_fields
from hanasc.passes.kinds import kinds, relax_passes
from hanasc.search.simulator import Simulator


def _one_kind_config(kind: str, model) -> tuple[Config, bool]:
    """A Config that uses only ``kind`` on ``model``, and whether its outputs are integer-quantized."""
    convs = [layer.name for layer in model.layers if layer.op == "conv"]
    if kind == "width":
        from hanasc.passes.channel_groups import channel_groups

        group = next(g for g in channel_groups(model.mod["main"], model.mod) if g.prunable and g.layers)
        return Config({name: LayerChoice(width=0.5) for name in group.layers}), False
    if kind == "depth":
        return Config(skip=[block_names(model)[0]]), False
    if kind == "kernel":
        five = next(layer.name for layer in model.layers if layer.kernel and layer.kernel[0] == 5)
        return Config({five: LayerChoice(kernel=3)}), False
    if kind == "separable":
        return Config({convs[-1]: LayerChoice(separable=True)}), False
    return Config({layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers}), True


MODELS = {"width": "inverted_residual", "depth": "inverted_residual", "precision": "inverted_residual"}


@pytest.mark.parametrize("kind", ["width", "depth", "kernel", "separable", "precision"])
def test_pass_simulation_and_onnx_rewrite_agree(kind, test_models):
    model = hanasc.load_model(test_models[MODELS.get(kind, "plain_conv")])
    config, integer = _one_kind_config(kind, model)
    x = np.random.default_rng(1).standard_normal((4, *model.inputs[0].shape[1:])).astype(np.float32)
    ranges = calibration(model, x) if integer else None
    materialized = materialized_outputs(model, config, ranges, x)
    simulated = Simulator(model, batch=2).run(config, x, ranges)
    assert_agree(simulated, materialized, integer=integer)
    declared = next(k for k in kinds() if k.name == kind)
    if declared.onnx_rewrite is not None:
        exported, _ = onnx_rewrite.export_architecture(model, config)
        session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
        rewritten = np.concatenate([session.run(None, {model.inputs[0].name: s[None]})[0] for s in x])
        assert_agree(rewritten, materialized, integer=False)


def test_every_config_field_belongs_to_one_kind_and_forms_resolve():
    fields = [f for kind in kinds() for f in kind.fields]
    assert sorted(fields) == sorted([*choice_fields(), "skip"])
    for kind in kinds():
        assert kind.simulation and kind.torch_form
        if kind.onnx_rewrite is not None:
            assert callable(kind.onnx_rewrite)


def test_materialize_applies_the_kinds_in_their_declared_order():
    names = [p.info.name for p in relax_passes(Config(), Config())]
    assert names == [
        "hanasc.PruneChannels",
        "hanasc.SkipBlocks",
        "hanasc.ShrinkKernel",
        "hanasc.SeparableConv",
        "hanasc.QuantizeLayers",
    ]
    assert [k.name for k in kinds()] == ["width", "depth", "kernel", "separable", "precision"]


def test_passes_package_exports_the_passes():
    import hanasc.passes as passes

    assert passes.MaterializeConfig.__name__ == "MaterializeConfig"
    assert passes.QuantizeLayers.__module__ == "hanasc.passes.quantize"
    with pytest.raises(AttributeError):
        passes.NoSuchPass  # noqa: B018
