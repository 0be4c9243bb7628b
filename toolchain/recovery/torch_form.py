"""The trainable torch form of a Config: the cleaned ONNX graph run by torch, computing what the simulator
computes, with gradients.

- Weights and biases of the searchable layers are torch parameters in the ORIGINAL shapes (the values a
  materialized module starts from, as the least-squares refits are). In the forward pass each is replaced
  by its simulation, the choice kinds' own numpy weight steps (:func:`hanasc.passes.kinds.simulate_weights`:
  pruning masks, kernel crops, the separable factorization, weight quantization),
  with a straight-through gradient: ``w + (simulate(w) - w).detach()``. So the forward pass is exactly the
  simulator's and training moves the values that the passes then transform.
- What a kind does beyond the weights, each kind declares (``ChoiceKind.torch_hooks``: ONNX node -> how its
  inputs change): the bits kind passes each layer's data input through the same activation fake-quantizer
  as the simulation graph (int8 with the calibrated scale, or an fp16 round trip), rounding
  straight-through; the depth kind multiplies a skipped residual block's branch by 0 at its Add, as the
  simulation graph gates it.

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
from hanasc.passes.kinds import kinds, simulate_weights
from hanasc.passes.onnx_batch import batch_one_reshapes
from hanasc.passes.quant_reference import weight_channel_axes
from hanasc.recovery.torch_ops import run_node


class TorchForm(torch.nn.Module):
    """``config`` on ``model`` as a torch module; ``values`` (original shapes) start the parameters."""

    def __init__(
        self, model: LoadedModel, config: Config, ranges, values: dict[str, np.ndarray] | None = None
    ) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.graph: onnx.GraphProto = model.onnx_model.graph
        self.axes = weight_channel_axes(model.onnx_model)
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
        self.hooks: dict[str, list] = {}  # ONNX node name -> the kinds' input changes, in kind order
        for kind in kinds():
            for node, hook in kind.torch_hooks(model, config, ranges).items():
                self.hooks.setdefault(node, []).append(hook)
        self.batch_copies = {
            name: torch.from_numpy(target) for name, target in batch_one_reshapes(self.graph).items()
        }

    def values(self) -> dict[str, np.ndarray]:
        """The current parameter values (original shapes), by initializer name."""
        return {name: p.detach().numpy().copy() for name, p in zip(self.names, self.params, strict=True)}

    def effective(self) -> dict[str, torch.Tensor]:
        """The simulated weights of the current values, with straight-through gradients."""
        current = self.values()
        simulated = simulate_weights(
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The first graph output for the batch ``x``."""
        tensors: dict[str, torch.Tensor] = {**self.constants, **self.effective()}
        tensors[self.graph.input[0].name] = x
        for node in self.graph.node:
            inputs = [tensors[name] if name else None for name in node.input]
            for hook in self.hooks.get(node.name, ()):
                inputs = hook(inputs)
            if node.op_type == "Reshape" and node.output[0] in self.batch_copies:
                inputs[1] = self.batch_copies[node.output[0]]
            for name, value in zip(node.output, run_node(node, inputs), strict=False):
                tensors[name] = value
        return tensors[self.graph.output[0].name]
