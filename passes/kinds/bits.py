"""Bits (quantization): a layer's (weight bits, activation bits) pair, one gene per layer."""

from __future__ import annotations

from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.kinds.base import ChoiceKind, KernelSpec, Slot, TorchHook
from hanasc.passes.quant_reference import QMAX, QMIN, fake_quantize_weight
from hanasc.passes.quantize import QuantizeLayers


def layer_dtype(choice: LayerChoice) -> str:
    """The dtype a layer computes in under ``choice``: int8, float16 or float32."""
    if choice.a_bits == 8:
        return "int8"
    return "float16" if 16 in (choice.a_bits, choice.w_bits) else "float32"


def activation_gates(layer: str, config: Config, ranges) -> tuple[float, float, float]:
    """(scale, int8 gate, fp16 gate) of the fake-quantizer in front of ``layer``."""
    choice = config.choice(layer)
    if choice.a_bits == 8:
        if ranges is None or layer not in ranges.ranges:
            raise ConfigError(f"layer '{layer}': a_bits=8 needs calibrated activation ranges (give --data)")
        return ranges.scale(layer), 1.0, 0.0
    fp16 = 1.0 if choice.a_bits == 16 or choice.w_bits == 16 else 0.0
    return 1.0, 0.0, fp16


def _fp16_round_trip(inputs: list) -> list:
    x = inputs[0]
    inputs[0] = x + (x.half().float() - x).detach()
    return inputs


def _int8_fake_quant(scale: float) -> TorchHook:
    """int8 fake quantization of a node's data input with the calibrated ``scale``, rounding
    straight-through (as the simulation graph's activation gate)."""
    import numpy as np

    inverse, scale32 = np.float32(1.0) / np.float32(scale), np.float32(scale)

    def hook(inputs: list) -> list:
        import torch

        x = inputs[0] * float(inverse)
        q = torch.clamp(x + (torch.round(x) - x).detach(), float(QMIN), float(QMAX))
        inputs[0] = q * float(scale32)
        return inputs

    return hook


class Bits(ChoiceKind):
    name = "precision"
    gene = "precision"
    fields = ("w_bits", "a_bits")
    modes = ("joint", "quant")
    gene_rank = (0, 0)
    column_rank = 0
    architecture = False  # the target's own toolchain quantizes an exported ONNX graph
    simulation = "fake-quantized weights, and activation fake-quantizers gated in the simulation graph"
    torch_form = (
        "the simulation's fake-quantized weights and the same activation fake-quantizers, rounding "
        "straight-through"
    )
    columns = (("weights", lambda row: str(row["w_bits"])), ("activations", lambda row: str(row["a_bits"])))

    def slots(self, model, options) -> list[tuple[int, Slot]]:
        precisions = ((32, 32), *[p for p in options.precisions if p != (32, 32)])
        return [
            (i, Slot(f"{layer.name}:precision", self.gene, (layer.name,), precisions))
            for i, layer in enumerate(model.layers)
        ]

    def decode(self, slot: Slot, value, layers: dict[str, LayerChoice], skip: list[str]) -> None:
        for layer in slot.layers:
            choice = layers.setdefault(layer, LayerChoice())
            choice.w_bits, choice.a_bits = value

    def encode(self, slot: Slot, config: Config):
        choice = config.choice(slot.layers[0])
        return (choice.w_bits, choice.a_bits)

    def relax_pass(self, config: Config, ranges):
        return QuantizeLayers(config, ranges)

    def simulate(self, func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
        """Quantized weights of the layers not made separable (those were quantized by their factors)."""
        for layer in layers:
            choice = config.choice(layer.name)
            if not choice.separable:
                axis = axes.get(layer.weight, 0)
                weights[layer.weight] = fake_quantize_weight(weights[layer.weight], choice.w_bits, axis=axis)
        return weights

    def torch_hooks(self, model, config: Config, ranges) -> dict[str, TorchHook]:
        """Each layer's data input through the simulation graph's activation fake-quantizer."""
        hooks: dict[str, TorchHook] = {}
        for layer in model.layers:
            scale, g8, g16 = activation_gates(layer.name, config, ranges)
            if g8:
                hooks[layer.name] = _int8_fake_quant(scale)
            elif g16:
                hooks[layer.name] = _fp16_round_trip
        return hooks

    def cost_shapes(self, layer, choice, specs: list[KernelSpec]) -> list[KernelSpec]:
        dtype = layer_dtype(choice)
        for s in specs:
            s.dtype = "float32" if dtype == "int8" and s.float_activations else dtype
            s.weight_bits = choice.w_bits
        return specs

    def check_allowed(self, choice, allowed) -> str | None:
        if choice.w_bits != 32 and choice.w_bits not in allowed.weight_bits:
            return f"w_bits={choice.w_bits} not supported (allowed: {_join(allowed.weight_bits)})"
        if choice.a_bits != 32 and choice.a_bits not in allowed.act_bits:
            return f"a_bits={choice.a_bits} not supported (allowed: {_join(allowed.act_bits)})"
        return None


def _join(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)
