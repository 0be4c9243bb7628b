"""Rebatching an exported ONNX graph: the Reshape targets that hard-code batch 1 (shared by the simulation
graph, ``hanasc.search.simulation_graph``, and the trainable torch form, ``hanasc.recovery.torch_form``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def batch_one_reshapes(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Reshape targets that hard-code batch 1 (a Constant node's or an initializer's), made to copy the
    input's batch instead (ONNX Reshape: 0 copies the dimension): by the Reshape's output, the new target.
    The simulation graph and the torch form rebatch the same nodes with it."""
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    targets = {}
    for node in graph.node:
        value = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if value is not None and value.size and value.reshape(-1)[0] == 1:
            target = value.reshape(-1).astype(np.int64).copy()
            target[0] = 0
            targets[node.output[0]] = target
    return targets
