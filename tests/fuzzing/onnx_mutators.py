"""The ONNX mutators of :mod:`fuzzing.onnx_fuzz`: each edits a model in place to break one thing a real
exporter or a hand edit can (shapes, dtypes, attributes, initializers, graph structure, opsets, external
data) and returns a one-line description of what it did."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ---------------------------------------------------------------------------------------------- mutators

HUGE_DIMS = (2**20, 2**31, 2**40, 2**62, 10**6)
ODD_INTS = (0, -1, -7, 2, 3, 7, 1000, 2**31, 2**62, -(2**62))
OPSETS = (0, 1, 6, 7, 9, 11, 12, 13, 16, 17, 18, 20, 21, 22, 23, 26, 99, -1)
IR_VERSIONS = (0, 1, 3, 6, 7, 8, 9, 10, 11, 12, 99)
OP_TYPES = ("Relu", "Identity", "Conv", "Gemm", "MatMul", "Add", "Softmax", "Foo", "", "LSTM", "Loop")
OP_TYPES += ("Resize", "Reshape", "NonZero", "ConstantOfShape", "Concat", "Split")


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _all_tensor_names(graph: onnx.GraphProto) -> list[str]:
    names = [i.name for i in graph.input] + [i.name for i in graph.initializer]
    return names + [o for n in graph.node for o in n.output]


def m_attribute(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    nodes = [n for n in model.graph.node if n.attribute] or list(model.graph.node)
    node = rng.choice(nodes)
    action = rng.choice(["int", "ints", "drop", "unknown", "retype", "float"])
    if action == "unknown" or not node.attribute:
        node.attribute.append(helper.make_attribute("bogus", rng.choice(ODD_INTS)))
        return f"node '{node.name}': unknown attribute bogus"
    attr = rng.choice(list(node.attribute))
    if action == "drop":
        node.attribute.remove(attr)
        return f"node '{node.name}': attribute {attr.name} dropped"
    if action == "retype":
        new = helper.make_attribute(attr.name, rng.choice(["same_upper", "x", ""]))
        node.attribute.remove(attr)
        node.attribute.append(new)
        return f"node '{node.name}': attribute {attr.name} made a string"
    if action == "float":
        new = helper.make_attribute(attr.name, rng.choice([float("nan"), float("inf"), -1e30, 0.5]))
        node.attribute.remove(attr)
        node.attribute.append(new)
        return f"node '{node.name}': attribute {attr.name} made a float"
    if action == "int" or attr.type == onnx.AttributeProto.INT:
        value = rng.choice(ODD_INTS)
        new = helper.make_attribute(attr.name, value)
        node.attribute.remove(attr)
        node.attribute.append(new)
        return f"node '{node.name}': {attr.name}={value}"
    values = [rng.choice(ODD_INTS) for _ in range(rng.randint(0, 6))]
    new = helper.make_attribute(attr.name, values) if values else helper.make_attribute(attr.name, [0])
    if not values:
        del new.ints[:]
    node.attribute.remove(attr)
    node.attribute.append(new)
    return f"node '{node.name}': {attr.name}={values}"


def _mutate_dims(rng: random.Random, dims, label: str) -> str:
    action = rng.choice(["huge", "huge", "zero", "negative", "symbolic", "clear", "rank", "big"])
    if action == "clear":
        del dims[:]
        return f"{label}: shape without dims"
    if action == "rank":
        if dims and rng.random() < 0.5:
            del dims[-1]
            return f"{label}: one dim fewer"
        dims.add().dim_value = rng.choice([1, 3])
        return f"{label}: one dim more"
    if not dims:
        dims.add().dim_value = 1
    dim = dims[rng.randrange(len(dims))]
    if action == "huge":
        value = rng.choice(HUGE_DIMS)
        dim.dim_value = value
        return f"{label}: a dim set to {value}"
    if action == "big":
        value = rng.choice([64, 100, 257])
        dim.dim_value = value
        return f"{label}: a dim set to {value}"
    if action == "zero":
        dim.dim_value = 0
        return f"{label}: a dim set to 0"
    if action == "negative":
        dim.dim_value = -1
        return f"{label}: a dim set to -1"
    dim.dim_param = rng.choice(["?", "batch", "N", ""])
    return f"{label}: a dim made symbolic '{dim.dim_param}'"


def m_input_shape(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    inp = rng.choice(real_inputs(model.graph))
    tensor_type = inp.type.tensor_type
    if rng.random() < 0.1:
        tensor_type.ClearField("shape")
        return f"input '{inp.name}': shape removed"
    return _mutate_dims(rng, tensor_type.shape.dim, f"input '{inp.name}'")


def m_value_info_shape(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    graph = model.graph
    if rng.random() < 0.5:
        out = rng.choice(list(graph.output))
        return _mutate_dims(rng, out.type.tensor_type.shape.dim, f"output '{out.name}'")
    node = rng.choice(list(graph.node))
    vi = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, [1, 8, 16, 16])
    graph.value_info.append(vi)
    return _mutate_dims(rng, vi.type.tensor_type.shape.dim, f"value_info '{node.output[0]}'")


def m_initializer(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    init = rng.choice(list(model.graph.initializer))
    action = rng.choice(["dims", "huge", "no_data", "float_data", "dtype"])
    if action == "dims":
        init.dims[:] = [rng.choice([0, 1, 2, 5]) for _ in range(rng.randint(0, 4))]
        return f"initializer '{init.name}': dims {list(init.dims)} (data unchanged)"
    if action == "huge":
        init.dims[:] = [rng.choice(HUGE_DIMS), *list(init.dims)[1:]]
        return f"initializer '{init.name}': dims {list(init.dims)}"
    if action == "no_data":
        init.ClearField("raw_data")
        del init.float_data[:]
        return f"initializer '{init.name}': no data"
    if action == "float_data":
        init.ClearField("raw_data")
        init.float_data[:] = [1.0] * rng.choice([0, 1, 3])
        return f"initializer '{init.name}': {len(init.float_data)} float_data values"
    init.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99])
    return f"initializer '{init.name}': data_type {init.data_type}"


def m_dtype(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    target = rng.choice([*real_inputs(model.graph), *model.graph.output])
    value = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99])
    target.type.tensor_type.elem_type = value
    return f"'{target.name}': elem_type {value}"


def m_dangling(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    graph = model.graph
    action = rng.choice(["input", "output", "rename"])
    if action == "input":
        node = rng.choice(list(graph.node))
        slot = rng.randrange(len(node.input)) if node.input else 0
        if node.input:
            node.input[slot] = "ghost"
        else:
            node.input.append("ghost")
        return f"node '{node.name}': input {slot} is 'ghost' (produced by nothing)"
    if action == "output":
        graph.output[0].name = "ghost_output"
        return "graph output renamed to 'ghost_output' (produced by nothing)"
    node = rng.choice(list(graph.node))
    old = node.output[0]
    node.output[0] = old + "_renamed"
    return f"node '{node.name}': output '{old}' renamed (its consumers dangle)"


def m_duplicate(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    graph = model.graph
    action = rng.choice(["output", "initializer", "input", "node", "node_name"])
    nodes = list(graph.node)
    if action == "output" and len(nodes) > 1:
        a, b = rng.sample(nodes, 2)
        b.output[0] = a.output[0]
        return f"nodes '{a.name}' and '{b.name}' both write '{a.output[0]}'"
    if action == "initializer":
        init = rng.choice(list(graph.initializer))
        graph.initializer.append(init)
        return f"initializer '{init.name}' listed twice"
    if action == "input":
        graph.input.append(graph.input[0])
        return f"input '{graph.input[0].name}' listed twice"
    if action == "node":
        node = rng.choice(nodes)
        graph.node.append(node)
        return f"node '{node.name}' appears twice"
    a, b = rng.sample(nodes, 2)
    b.name = a.name
    return f"two nodes named '{a.name}'"


def m_cycle(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    nodes = list(model.graph.node)
    if rng.random() < 0.3:
        node = rng.choice([n for n in nodes if n.input])
        node.input[0] = node.output[0]
        return f"node '{node.name}' reads its own output"
    i, j = sorted(rng.sample(range(len(nodes)), 2))
    if not nodes[i].input:
        nodes[i].input.append(nodes[j].output[0])
    else:
        nodes[i].input[0] = nodes[j].output[0]
    return f"node '{nodes[i].name}' reads '{nodes[j].output[0]}', produced after it (cycle)"


def m_missing_initializer(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    graph = model.graph
    init = rng.choice(list(graph.initializer))
    graph.initializer.remove(init)
    return f"initializer '{init.name}' removed"


def m_external_data(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    init = rng.choice(floats)
    data = numpy_helper.to_array(init).tobytes()
    init.ClearField("raw_data")
    del init.float_data[:]
    init.data_location = TensorProto.EXTERNAL
    secret = folder.parent / "secret.bin"
    secret.write_bytes(b"\x00" * max(len(data), 64))
    action = rng.choice(
        ["ok", "missing", "escape", "absolute", "deep_escape", "symlink", "offset", "length", "empty", "dir"]
    )
    location, extra = "weights.bin", {}
    if action == "ok":
        (folder / location).write_bytes(data)
    elif action == "missing":
        location = "missing.bin"
    elif action == "escape":
        location = "../secret.bin"
    elif action == "absolute":
        location = str(secret.resolve())
    elif action == "deep_escape":
        location = "sub/../../secret.bin"
    elif action == "symlink":
        (folder / location).symlink_to(secret)
    elif action == "offset":
        (folder / location).write_bytes(data)
        extra = {"offset": str(rng.choice([len(data) + 4, 2**40, -8]))}
    elif action == "length":
        (folder / location).write_bytes(data)
        extra = {"length": str(rng.choice([1, len(data) * 4, 2**40]))}
    elif action == "empty":
        location = ""
    else:
        (folder / "adir").mkdir(exist_ok=True)
        location = "adir"
    for key, value in {"location": location, **extra}.items():
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    extra_text = f", {extra}" if extra else ""
    return f"initializer '{init.name}': external data '{location}' ({action}{extra_text})"


def m_opset(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    action = rng.choice(["opset", "opset", "drop", "domain", "ir"])
    if action == "opset":
        version = rng.choice(OPSETS)
        model.opset_import[0].version = version
        return f"opset {version}"
    if action == "drop":
        del model.opset_import[:]
        return "no opset_import"
    if action == "domain":
        model.opset_import.append(helper.make_opsetid(rng.choice(["com.microsoft", "ai.onnx.ml", "x"]), 1))
        node = rng.choice(list(model.graph.node))
        node.domain = model.opset_import[-1].domain
        return f"node '{node.name}' in domain '{node.domain}'"
    model.ir_version = rng.choice(IR_VERSIONS)
    return f"ir_version {model.ir_version}"


def m_op_type(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    node = rng.choice(list(model.graph.node))
    old, node.op_type = node.op_type, rng.choice(OP_TYPES)
    return f"node '{node.name}': {old} -> {node.op_type!r}"


def m_structure(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    graph = model.graph
    action = rng.choice(["remove_node", "shuffle", "no_outputs", "input_as_output", "no_nodes", "no_inputs"])
    if action == "remove_node":
        node = rng.choice(list(graph.node))
        graph.node.remove(node)
        return f"node '{node.name}' removed"
    if action == "shuffle":
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
        return "nodes shuffled (not in topological order)"
    if action == "no_outputs":
        del graph.output[:]
        return "no graph outputs"
    if action == "input_as_output":
        graph.output.append(real_inputs(graph)[0])
        return "the input is also an output"
    if action == "no_nodes":
        del graph.node[:]
        return "no nodes"
    for inp in real_inputs(graph):
        graph.input.remove(inp)
    return "no graph inputs"


def m_huge_constant(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    """A constant-foldable op that would allocate a huge tensor: it must be refused before folding."""
    graph = model.graph
    dims = [rng.choice(HUGE_DIMS[:2]), rng.choice([1024, 4096, 2**20])]
    op = rng.choice(["ConstantOfShape", "Expand", "Tile", "Range"])
    if op == "ConstantOfShape":
        graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), "huge_shape"))
        node = helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"], name="huge_const")
        nodes = [node]
    elif op == "Expand":
        graph.initializer.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), "huge_shape"))
        nodes = [helper.make_node("Expand", ["one", "huge_shape"], ["huge"], name="huge_expand")]
    elif op == "Tile":
        graph.initializer.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), "huge_shape"))
        nodes = [helper.make_node("Tile", ["one", "huge_shape"], ["huge"], name="huge_tile")]
    else:
        for name, value in (("start", 0.0), ("limit", float(dims[0]) * dims[1]), ("delta", 1.0)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
        nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["huge"], name="huge_range")]
    nodes.append(helper.make_node("ReduceMax", ["huge"], ["huge_max"], name="huge_reduce", keepdims=0))
    first_out = graph.output[0].name
    nodes.append(helper.make_node("Add", [first_out + "_pre", "huge_max"], [first_out], name="huge_add"))
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == first_out:
                node.output[i] = first_out + "_pre"
    graph.node.extend(nodes)
    return f"{op} of shape {dims} folded into the output"


def m_metadata(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    value = rng.choice(
        ["not json", "[1, 2]", '{"mean": "abc"}', '{"resize": -5}', '{"std": [0, 0, 0]}', "{}"]
    )
    entry = model.metadata_props.add()
    entry.key, entry.value = "hanasc.preprocess", value
    return f"metadata hanasc.preprocess = {value!r}"


def m_values(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    """Valid structure, hostile numbers: NaN, infinities, huge or all-zero weights (inspect accepts these)."""
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and i.dims]
    init = rng.choice(floats)
    values = numpy_helper.to_array(init).copy()
    kind = rng.choice(["nan", "inf", "huge", "zero", "tiny"])
    flat = values.reshape(-1)
    if kind == "zero":
        flat[:] = 0.0
    elif kind == "tiny":
        flat[:] = 1e-38
    else:
        picks = rng.sample(range(flat.size), min(flat.size, rng.choice([1, 3, flat.size])))
        flat[picks] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[kind]
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    return f"initializer '{init.name}': {kind} values"


def m_valid_attribute(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    """A conv/pool attribute changed to another legal value (strides, pads, dilations)."""
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool")]
    node = rng.choice(nodes)
    name, value = rng.choice(
        [("strides", [2, 2]), ("pads", [0, 0, 0, 0]), ("pads", [2, 2, 2, 2]), ("dilations", [2, 2])]
    )
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, value))
    for out in model.graph.output:  # the output shape may change: declare only the rank
        for dim in out.type.tensor_type.shape.dim:
            dim.dim_param = "d"
    del model.graph.value_info[:]
    return f"node '{node.name}': {name}={value}"


def m_option(rng: random.Random, model: onnx.ModelProto, folder: Path) -> str:
    """Marks the mutant for a bad --input-shape (chosen in :func:`_option_args`)."""
    return "bad --input-shape"
