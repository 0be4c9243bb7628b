"""The trainable torch form of a Config: the cleaned ONNX graph run by torch, computing what the simulator
computes, with gradients.

- Weights and biases of the searchable layers are torch parameters in the ORIGINAL shapes (the values a
  materialized module starts from, as the least-squares refits are). In the forward pass each is replaced
  by its simulation, the choice kinds' own numpy weight steps (:func:`hanasc.search.simulated_weights.
  simulated_weights`: pruning masks, kernel crops, the separable factorization, weight quantization),
  with a straight-through gradient: ``w + (simulate(w) - w).detach()``. So the forward pass is exactly the
  simulator's and training moves the values that the passes then transform.
- Each layer's data input passes through the same activation fake-quantizer as in the simulation graph
  (int8 with the calibrated scale, or an fp16 round trip), rounding straight-through.
- A skipped residual block's branch is multiplied by 0 at its Add, as the simulation graph gates it.

The three forms of every choice kind (Relax pass, simulation, this form) are checked to agree in
``tests/test_torch_form.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import Config
from hanasc.recovery.torch_ops import run_node
from hanasc.search.simulation_graph import batch_one_reshapes


def _straight_through_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class TorchForm(torch.nn.Module):
    """``config`` on ``model`` as a torch module; ``values`` (original shapes) start the parameters."""

    def __init__(
        self, model: LoadedModel, config: Config, ranges, values: dict[str, np.ndarray] | None = None
    ) -> None:
        super().__init__()
        from hanasc.passes.depth import residual_blocks_onnx
        from hanasc.passes.quant_reference import QMAX, QMIN, weight_channel_axes
        from hanasc.search.simulated_weights import activation_gates

        self.model, self.config = model, config
        self.graph: onnx.GraphProto = model.onnx_model.graph
        self.axes = weight_channel_axes(model.onnx_model)
        self.qmin, self.qmax = float(QMIN), float(QMAX)
        self.base = model.weights()  # converted from the ONNX initializers once, not every step
        start = {**self.base, **(values or {})}
        trainable = [layer.weight for layer in model.layers] + [
            layer.bias for layer in model.layers if layer.bias
        ]
        self.names = [name for name in trainable if name in start]
        self.params = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(np.array(start[name], np.float32))) for name in self.names
        )
        self.constants = {
            init.name: torch.from_numpy(np.array(numpy_helper.to_array(init)))
            for init in self.graph.initializer
            if init.name not in set(self.names)
        }
        self.fake_quant = {}
        for layer in model.layers:
            scale, g8, g16 = activation_gates(layer.name, config, ranges)
            if g8:
                self.fake_quant[layer.name] = ("int8", np.float32(1.0) / np.float32(scale), np.float32(scale))
            elif g16:
                self.fake_quant[layer.name] = ("fp16", None, None)
        self.batch_copies = {
            name: torch.from_numpy(target) for name, target in batch_one_reshapes(self.graph).items()
        }
        self.gated = {
            b.add_node: b.branch_input
            for b in residual_blocks_onnx(model.onnx_model)
            if b.name in config.skip
        }

    def values(self) -> dict[str, np.ndarray]:
        """The current parameter values (original shapes), by initializer name."""
        return {name: p.detach().numpy().copy() for name, p in zip(self.names, self.params, strict=True)}

    def effective(self) -> dict[str, torch.Tensor]:
        """The simulated weights of the current values, with straight-through gradients."""
        from hanasc.search.simulated_weights import simulated_weights

        current = self.values()
        simulated = simulated_weights(
            self.model.mod["main"],
            self.model.layers,
            {**self.base, **current},
            self.config,
            self.axes,
        )
        out = {}
        for name, p in zip(self.names, self.params, strict=True):
            target = torch.from_numpy(np.asarray(simulated[name], np.float32).reshape(p.shape))
            out[name] = p + (target - p).detach()
        return out

    def _quantize_input(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        kind, inverse, scale = self.fake_quant[layer]
        if kind == "fp16":
            return x + (x.half().float() - x).detach()
        q = torch.clamp(_straight_through_round(x * float(inverse)), self.qmin, self.qmax)
        return q * float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The first graph output for the batch ``x``."""
        tensors: dict[str, torch.Tensor] = {**self.constants, **self.effective()}
        tensors[self.graph.input[0].name] = x
        for node in self.graph.node:
            inputs = [tensors[name] if name else None for name in node.input]
            if node.name in self.fake_quant:  # keyed by layer (node) name
                inputs[0] = self._quantize_input(node.name, inputs[0])
            if node.name in self.gated:
                branch = self.gated[node.name]
                inputs[branch] = inputs[branch] * 0.0
            if node.op_type == "Reshape" and node.output[0] in self.batch_copies:
                inputs[1] = self.batch_copies[node.output[0]]
            for name, value in zip(node.output, run_node(node, inputs), strict=False):
                tensors[name] = value
        return tensors[self.graph.output[0].name]
