"""A new choice kind takes one module and one ``register`` call: a toy kind that scales a conv's bias,
written to a temporary folder, gets genes, round-trips through genomes and Config JSON, is materialized by
its Relax pass and checked against the target, without any other project file knowing of it."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest

import hanasc
from hanasc.core.relax_params import weights_of
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.kinds import kinds, register, unregister
from hanasc.passes.materialize import materialize
from hanasc.search.space import build_space
from hanasc.targets.registry import UnsupportedChoiceError, check_choices

TOY_KIND = '''
"""A toy choice kind: scale a conv layer's bias by 1.0 or 0.5."""

from __future__ import annotations

import numpy as np

from hanasc.passes.config import ExtraField
from hanasc.passes.kinds.base import ChoiceKind, Slot, op_check


def _check(value) -> str | None:
    return None if value in (1.0, 0.5, 0.25) else "must be 1.0, 0.5 or 0.25"


def _scale_bias_pass(config):
    from tvm import relax

    from hanasc.passes.weights import WeightEditor

    @relax.transform.function_pass(opt_level=0, name="toy.ScaleBias")
    class ScaleBias:
        def transform_function(self, func, mod, ctx):
            if not isinstance(func, relax.Function):
                return func
            editor = WeightEditor(func)
            for name, choice in config.layers.items():
                bias, scale = f"{name}.bias", choice.get("bias_scale")
                if scale != 1.0 and bias in editor.values:
                    editor.set(bias, (editor.value(bias) * np.float32(scale)).astype(np.float32))
            return editor.finish()

    return ScaleBias()


class BiasScale(ChoiceKind):
    name = "bias_scale"
    gene = "bias_scale"
    fields = ("bias_scale",)
    extra_fields = (ExtraField("bias_scale", 1.0, _check),)
    simulation = "none (a toy)"
    torch_form = "none (a toy)"

    def slots(self, model, options):
        return [
            (i, Slot(f"{layer.name}:bias_scale", self.gene, (layer.name,), (1.0, 0.5)))
            for i, layer in enumerate(model.layers)
            if layer.op == "conv" and layer.bias
        ]

    def relax_pass(self, config, ranges):
        return _scale_bias_pass(config)

    def check_allowed(self, choice, allowed):
        return op_check("bias_scale", choice.get("bias_scale") != 1.0, allowed)
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy_kind")
    (folder / "toy_bias_kind.py").write_text(textwrap.dedent(TOY_KIND))
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("toy_bias_kind")
        kind = register(module.BiasScale())
        yield kind
    finally:
        if any(k.name == "bias_scale" for k in kinds()):
            unregister("bias_scale")
        sys.path.remove(str(folder))
        sys.modules.pop("toy_bias_kind", None)


@pytest.fixture(scope="module")
def model(test_models):
    return hanasc.load_model(test_models["plain_conv"])


def _biased_conv(model) -> str:
    return next(layer.name for layer in model.layers if layer.op == "conv" and layer.bias)


def test_genes_come_after_the_existing_ones(toy, model):
    unregister("bias_scale")
    before = build_space(model).slots
    register(toy)
    space = build_space(model)
    assert space.slots[: len(before)] == before  # existing genomes keep their meaning
    toy_slots = [s for s in space.slots if s.kind == "bias_scale"]
    assert toy_slots and all(s.choices == (1.0, 0.5) for s in toy_slots)
    assert kinds()[-1] is toy  # applied last


def test_decode_encode_and_json_round_trip(toy, model):
    space = build_space(model)
    genome = space.identity()
    genome[next(i for i, s in enumerate(space.slots) if s.kind == "bias_scale")] = 1
    genome[0] = 2  # a precision gene too
    config = space.decode(genome)
    assert any(c.get("bias_scale") == 0.5 for c in config.layers.values())
    assert (space.encode(config) == genome).all()
    text = json.dumps(config.to_json())
    assert '"bias_scale": 0.5' in text
    again = Config.from_json(json.loads(text))
    assert again == config and (space.encode(again) == genome).all()
    with pytest.raises(ConfigError, match="bias_scale=3"):
        Config.from_json({"layers": {_biased_conv(model): {"bias_scale": 3}}})


def test_materialization_applies_its_pass(toy, model):
    layer = _biased_conv(model)
    config = Config({layer: LayerChoice(extra={"bias_scale": 0.5})})
    assert not config.is_identity()
    before, after = weights_of(model.mod), weights_of(materialize(model.mod, config))
    np.testing.assert_allclose(after[f"{layer}.bias"], 0.5 * before[f"{layer}.bias"], rtol=1e-6)
    np.testing.assert_array_equal(after[f"{layer}.weight"], before[f"{layer}.weight"])


def test_check_choices_rejects_what_the_target_does_not_list(toy, model):
    layer = _biased_conv(model)
    check_choices("host", Config({layer: LayerChoice(extra={"bias_scale": 1.0})}), model.layers)
    with pytest.raises(UnsupportedChoiceError, match="'bias_scale' changes are not supported"):
        check_choices("host", Config({layer: LayerChoice(extra={"bias_scale": 0.5})}), model.layers)


def test_unregistered_kind_leaves_no_field(toy, model):
    unregister("bias_scale")
    try:
        with pytest.raises(ConfigError, match="unknown choice 'bias_scale'"):
            Config.from_json({"layers": {_biased_conv(model): {"bias_scale": 0.5}}})
        assert "bias_scale" not in {s.kind for s in build_space(model).slots}
    finally:
        register(toy)


def test_onnx_export_refuses_an_architecture_kind_without_a_rewrite(toy, model):
    from hanasc.compile.onnx_rewrite import OnnxRewriteError, export_architecture

    config = Config({_biased_conv(model): LayerChoice(extra={"bias_scale": 0.5})})
    with pytest.raises(OnnxRewriteError, match="'bias_scale' changes cannot be written"):
        export_architecture(model, config)
