"""Small test models built in the tests: torch modules exported to ONNX, and onnx.helper graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


class PlainConvStack(nn.Module):
    """conv-bn-relu x3 with a stride and a 5x5 kernel, then global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=2, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class InvertedResidual(nn.Module):
    """A MobileNetV2 inverted-residual block (expand 1x1, depthwise 3x3, project 1x1, identity skip)."""

    def __init__(self, channels: int = 16, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return y + self.block(y)


class SqueezeExciteHardswish(nn.Module):
    """A block with squeeze-excite (pool, 1x1 reduce, 1x1 expand, hardsigmoid gate) and hardswish."""

    def __init__(self, channels: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.act = nn.Hardswish()
        self.se_reduce = nn.Conv2d(channels, channels // 4, 1)
        self.se_expand = nn.Conv2d(channels // 4, channels, 1)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        s = torch.relu(self.se_reduce(y.mean(dim=(2, 3), keepdim=True)))
        y = y * nn.functional.hardsigmoid(self.se_expand(s))
        return self.act(self.project(y))


class DenseHead(nn.Module):
    """conv features, flatten, two dense layers (a classifier head)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 14 * 14, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


class DenseHeadSoftmax(DenseHead):
    """:class:`DenseHead` ending in a softmax: a kernel no default schedule covers (what tuning tunes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)


TORCH_MODELS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "plain_conv": (PlainConvStack, (1, 3, 32, 32)),
    "inverted_residual": (InvertedResidual, (1, 3, 32, 32)),
    "se_hardswish": (SqueezeExciteHardswish, (1, 3, 32, 32)),
    "dense_head": (DenseHead, (1, 1, 28, 28)),
    "dense_softmax": (DenseHeadSoftmax, (1, 1, 28, 28)),
}


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics so folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def export_torch_model(name: str, folder: Path, dynamic_batch: bool = False) -> Path:
    """Export one of TORCH_MODELS to ``folder/name.onnx`` (raw torch export: BN and all)."""
    cls, shape = TORCH_MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    randomize_bn(model)
    dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    return export_module(
        model, shape, folder / f"{name}.onnx", constant_folding=False, dynamic_axes=dynamic_axes
    )


def export_module(
    module: nn.Module,
    shape: tuple[int, ...],
    path: Path,
    constant_folding: bool = True,
    dynamic_axes: dict | None = None,
) -> Path:
    """``module`` exported to ``path`` with torch's ONNX exporter (opset 17, one input and one output)."""
    torch.onnx.export(
        module,
        (torch.randn(shape),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
        do_constant_folding=constant_folding,
        dynamic_axes=dynamic_axes,
    )
    return path


def single_op_model(op_type: str, path: Path, shape: tuple[int, ...] = (1, 4, 8, 8), **attrs) -> Path:
    """A one-node graph ``output = op_type(input)`` built with onnx.helper."""
    node = helper.make_node(op_type, ["input"], ["output"], name=f"my_{op_type.lower()}", **attrs)
    graph = helper.make_graph(
        [node],
        "single",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def conv_with_external_weight(folder: Path, location: str) -> Path:
    """A conv whose weight is stored as external data at ``location`` (relative to the model)."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    node = helper.make_node("Conv", ["input", "w"], ["output"], name="conv")
    graph = helper.make_graph(
        [node],
        "ext",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])],
        initializer=[weight],
    )
    path = folder / "ext.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    return path


def folded_sequence_model(path: Path) -> Path:
    """conv -> Reshape [4, -1] (batch folded in, as exporters do for batch 1) -> Add (4, 64) -> (1, 4, 64).

    A sequence output (not ``(batch, classes)``) whose graph does not re-batch: shape inference fails at the
    Add for any batch but 1.
    """
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([4, -1], np.int64), "fold"),
        numpy_helper.from_array(rng.standard_normal((4, 64)).astype(np.float32), "pos"),
        numpy_helper.from_array(np.array([1, 4, 64], np.int64), "seq"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "fold"], ["f"], name="fold"),
        helper.make_node("Add", ["f", "pos"], ["a"], name="add_pos"),
        helper.make_node("Reshape", ["a", "seq"], ["output"], name="to_sequence"),
    ]
    return save_graph(path, nodes, inits, [1, 3, 8, 8], [1, 4, 64])


def shared_flatten_model(path: Path) -> Path:
    """Conv and the input each flattened by a Reshape; both Reshapes read one target that hard-codes
    batch 1 (``[1, -1]``); two MatMuls and an Add make the (1, 5) output."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((48, 5)).astype(np.float32), "fc1"),
        numpy_helper.from_array(rng.standard_normal((32, 5)).astype(np.float32), "fc2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "flat"], ["c_flat"], name="r1"),
        helper.make_node("Reshape", ["input", "flat"], ["x_flat"], name="r2"),
        helper.make_node("MatMul", ["c_flat", "fc1"], ["a"], name="m1"),
        helper.make_node("MatMul", ["x_flat", "fc2"], ["b"], name="m2"),
        helper.make_node("Add", ["a", "b"], ["output"], name="add"),
    ]
    return save_graph(path, nodes, inits, [1, 2, 4, 4], [1, 5])


def save_graph(path: Path, nodes: list, inits: list, input_shape: list, output_shape: list) -> Path:
    """One float input ``input`` and output ``output``, opset 17, saved to ``path``."""
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
