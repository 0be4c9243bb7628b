"""The compile-once simulator: evaluate any Config with one forward pass per batch, no recompile.

The simulation graph (see :mod:`hanasc.search.simulation_graph`) is built and loaded into onnxruntime once per
model; a Config only changes its runtime inputs: the weights (transformed in numpy by the same functions
the passes use), the activation fake-quantization scales and gates, and the residual-block gates.
onnxruntime is the engine because untuned TVM CPU kernels are ~20x slower here; the equivalence of the
simulation with the TVM-materialized model is what the tests check (tests/test_simulator.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from hanasc.frontend.loading import LoadedModel
from hanasc.passes.depth import residual_blocks_onnx
from hanasc.passes.quant_reference import QMAX, QMIN, weight_channel_axes
from hanasc.recovery.bias_correction import reconstruction_for, recovered_simulation
from hanasc.search.simulated_weights import activation_gates, simulated_weights
from hanasc.search.simulation_graph import (
    ResidualGate,
    act_scale_input,
    block_gate_input,
    build_simulation_graph,
    gate_f16_input,
    gate_q8_input,
)


def _graph_session(model: LoadedModel, gates: list, batch: int, threads: int):
    """The simulation graph of ``model`` at ``batch`` and its onnxruntime session."""
    graph = build_simulation_graph(model.onnx_model, model.layers, gates, batch, QMIN, QMAX)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return graph, session


class Simulator:
    """One onnxruntime session over the simulation graph of ``model``; :meth:`run` evaluates a Config."""

    def __init__(self, model: LoadedModel, batch: int = 16, threads: int | None = None) -> None:
        self.model = model
        self.blocks = residual_blocks_onnx(model.onnx_model)
        gates = [ResidualGate(b.name, b.add_node, b.branch_input) for b in self.blocks]
        threads = threads or os.cpu_count() or 1
        try:
            self.graph, self.session = _graph_session(model, gates, batch, threads)
        except Exception:  # shapes folded for batch 1 (e.g. attention reshapes): run one sample at a time
            if batch == 1:
                raise
            batch = 1
            self.graph, self.session = _graph_session(model, gates, batch, threads)
        self.batch = batch
        self.input_name = model.inputs[0].name
        self.base_weights = model.weights()
        self.axes = weight_channel_axes(model.onnx_model)
        self._func = model.mod["main"]
        self._refitters: list[tuple] = []  # (ranges, Reconstruction or None), the two latest ranges

    def feeds(
        self, config, ranges=None, values: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The runtime inputs (weights, scales, gates) that make the graph compute ``config``: from the
        data-light recovery's values, or from ``values`` (fine-tuned, original shapes) when given."""
        if values is not None:
            weights = {**self.base_weights, **values}
            feeds = simulated_weights(self._func, self.model.layers, weights, config, self.axes)
        else:  # recovery (refits, bias corrections) as the materialized module gets it
            _, feeds = recovered_simulation(
                self._func,
                self.model.layers,
                self.base_weights,
                config,
                ranges,
                self.axes,
                self._reconstruction(ranges),
            )
        for layer in self.model.layers:
            scale, g8, g16 = activation_gates(layer.name, config, ranges)
            feeds[act_scale_input(layer.name)] = np.array(scale, np.float32)
            feeds[gate_q8_input(layer.name)] = np.array(bool(g8))
            feeds[gate_f16_input(layer.name)] = np.array(bool(g16))
        for block in self.blocks:
            feeds[block_gate_input(block.name)] = np.array(
                0.0 if block.name in config.skip else 1.0, np.float32
            )
        return feeds

    def _reconstruction(self, ranges):
        """The least-squares refitter for ``ranges``, kept for the two latest ranges objects (the compile job
        scores the search on one and the held-out data on another)."""
        for kept, refitter in self._refitters:
            if kept is ranges:
                return refitter
        refitter = reconstruction_for(self.model, ranges, self.axes)
        self._refitters = [*self._refitters[-1:], (ranges, refitter)]
        return refitter

    def run(self, config, x: np.ndarray, ranges=None, feeds: dict | None = None) -> np.ndarray:
        """Outputs of the first graph output for every sample of ``x`` (any count: padded to the batch)."""
        feeds = feeds if feeds is not None else self.feeds(config, ranges)
        outputs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            result = self.session.run(None, {**feeds, self.input_name: np.ascontiguousarray(chunk)})[0]
            outputs.append(result[:n])
        return np.concatenate(outputs)

    def evaluate(self, config, x: np.ndarray, metric: Callable[[np.ndarray], float], ranges=None) -> float:
        """``metric`` of the simulated outputs on ``x``."""
        return metric(self.run(config, x, ranges))
