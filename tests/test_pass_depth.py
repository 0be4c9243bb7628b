"""Residual blocks (Relax and ONNX agree), SkipBlocks (= branch gated by 0), EfficientNet-Lite0 end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from onnx import helper, numpy_helper
from torch import nn

import hanasc
from hanasc.core.relax_params import bind_weights, weights_of
from hanasc.frontend.relax_import import import_relax
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.depth import ResidualBlock, SkipBlocks, residual_blocks, residual_blocks_onnx
from hanasc.passes.kernel_shrink import ShrinkKernel, zero_outside_centre
from hanasc.passes.separable import SeparableConv, separable_errors, simulate_separable
from hanasc.passes.weights import weight_values
from hanasc.targets import host

TOL = 1e-4


class Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class Projection(nn.Module):
    """Not an identity residual: the shortcut goes through a 1x1 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.short, self.conv = nn.Conv2d(cin, cout, 1), nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.short(x) + self.conv(x)


class TwoInOne(nn.Module):
    """Two residual adds in one module: their common prefix collides, so they take their last layer's name."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.c, self.d = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.b(torch.relu(self.a(x)))
        return y + self.d(torch.relu(self.c(y)))


class ManyBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Res(8), Res(8)])
        self.proj = Projection(8, 16)
        self.pair = TwoInOne(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y + torch.relu(y)  # a residual add without a layer: not a block
        for block in self.blocks:
            y = block(y)
        return self.pair(self.proj(y)).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> hanasc.LoadedModel:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("depth") / "many.onnx"
    x = torch.randn(1, 3, 16, 16)
    torch.onnx.export(
        ManyBlocks().eval(), (x,), str(path), input_names=["input"], output_names=["output"], dynamo=False
    )
    return hanasc.load_model(path)


def gated_onnx(model: onnx.ModelProto, blocks: list[ResidualBlock], skip: list[str]) -> onnx.ModelProto:
    """The simulator's view of skipping: the branch input of each skipped block's Add multiplied by 0."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen = {b.add_node: b for b in blocks if b.name in skip}
    nodes = []
    for node in out.graph.node:
        block = chosen.get(node.name)
        if block is not None:
            gate, gated = f"{block.name}::gate", f"{block.name}::gated"
            zero = numpy_helper.from_array(np.zeros((), np.float32))
            nodes.append(helper.make_node("Constant", [], [gate], value=zero, name=gate))
            nodes.append(helper.make_node("Mul", [node.input[block.branch_input], gate], [gated], name=gated))
            node.input[block.branch_input] = gated
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def simulate(loaded, skip: list[str], weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    gated = gated_onnx(loaded.onnx_model, residual_blocks_onnx(loaded.onnx_model), skip)
    return host.run(host.build(bind_weights(import_relax(gated, loaded.inputs), weights)), [x])[0]


def conv_kernels(executable) -> list[str]:
    """Names of the compiled kernels that contain a conv2d."""
    line = next(line for line in executable.stats().splitlines() if "Globals" in line)
    return [name for name in line.split("[", 1)[1].rstrip("]").split(", ") if "conv2d" in name]


def rel_max_diff(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def assert_same_blocks(loaded) -> list[ResidualBlock]:
    relax_blocks, onnx_blocks = residual_blocks(loaded.mod), residual_blocks_onnx(loaded.onnx_model)
    assert [(b.name, b.layers, b.skip_input) for b in relax_blocks] == [
        (b.name, b.layers, b.skip_input) for b in onnx_blocks
    ]
    layer_names = {layer.name for layer in loaded.layers}
    for block in onnx_blocks:
        node = next(n for n in loaded.onnx_model.graph.node if n.name == block.add_node)
        assert node.op_type == "Add"
        assert (node.input[block.skip_input], node.input[block.branch_input]) == (block.skip, block.branch)
        assert set(block.layers) <= layer_names
    return onnx_blocks


def test_inverted_residual_block(test_models):
    loaded = hanasc.load_model(test_models["inverted_residual"])
    (block,) = assert_same_blocks(loaded)
    assert block.name == "block.block"
    assert block.layers == ["block.block.0", "block.block.3", "block.block.6"]


def test_names_and_non_blocks(many):
    blocks = assert_same_blocks(many)
    assert [(b.name, b.layers) for b in blocks] == [
        ("blocks.0", ["blocks.0.conv1", "blocks.0.conv2"]),
        ("blocks.1", ["blocks.1.conv1", "blocks.1.conv2"]),
        ("pair.b", ["pair.a", "pair.b"]),
        ("pair.d", ["pair.c", "pair.d"]),
    ]


@pytest.mark.parametrize("name", ["plain_conv", "se_hardswish", "dense_head"])
def test_models_without_residuals(test_models, name):
    loaded = hanasc.load_model(test_models[name])
    assert residual_blocks(loaded.mod) == residual_blocks_onnx(loaded.onnx_model) == []


def test_skip_equals_gate_zero(test_models):
    loaded = hanasc.load_model(test_models["inverted_residual"])
    new = SkipBlocks(Config(skip=["block.block"]))(loaded.mod)
    assert [p.name for p in new["main"].params] == ["input", "stem.stem.0.weight", "stem.stem.0.bias"]
    assert list(weight_values(new["main"])) == ["stem.stem.0.weight", "stem.stem.0.bias"]
    x = loaded.example_inputs()["input"]
    executable = host.build(bind_weights(new))
    assert len(conv_kernels(executable)) == 1 < len(conv_kernels(host.build(bind_weights(loaded.mod))))
    skipped = host.run(executable, [x])[0]
    simulation = simulate(loaded, ["block.block"], weights_of(loaded.mod), x)
    assert skipped.shape == simulation.shape == (1, 16, 32, 32)
    assert rel_max_diff(skipped, simulation) <= TOL


def test_skip_two_of_four_blocks(many):
    skip = ["blocks.1", "pair.b"]
    new = SkipBlocks(Config(skip=skip))(many.mod)
    names = [p.name for p in new["main"].params]
    gone = {"blocks.1.conv1", "blocks.1.conv2", "pair.a", "pair.b"}
    assert not any(n.rsplit(".", 1)[0] in gone for n in names)
    assert "blocks.0.conv1.weight" in names and "pair.d.weight" in names
    # the rest stay blocks (names come from the module at hand: "pair.d" no longer collides, so "pair")
    assert [b.layers for b in residual_blocks(new)] == [
        ["blocks.0.conv1", "blocks.0.conv2"],
        ["pair.c", "pair.d"],
    ]
    x = many.example_inputs()["input"]
    got = host.run(host.build(bind_weights(new)), [x])[0]
    assert rel_max_diff(got, simulate(many, skip, weights_of(many.mod), x)) <= TOL


def test_unknown_block(test_models):
    loaded = hanasc.load_model(test_models["inverted_residual"])
    with pytest.raises(ConfigError, match=r"'blocks\.9'.*known blocks: block\.block"):
        SkipBlocks(Config(skip=["blocks.9"]))(loaded.mod)


@pytest.mark.slow
def test_efficientnet_lite0_blocks(effnet_path):
    blocks = assert_same_blocks(hanasc.load_model(effnet_path))
    assert [b.name for b in blocks] == [f"blocks.{i}" for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
    assert all(len(b.layers) == 3 and b.skip_input == 1 for b in blocks)


@pytest.mark.slow
def test_efficientnet_lite0_all_architecture_passes(effnet_path: Path):
    """conv_stem separable, every 5x5 depthwise -> 3x3, blocks.4 and blocks.13 skipped: one materialized
    compile against the simulation (gated ONNX graph with simulation weights)."""
    loaded = hanasc.load_model(effnet_path)
    five = [layer.name for layer in loaded.layers if layer.op == "depthwise_conv" and layer.kernel == (5, 5)]
    assert len(five) == 9
    layers = {name: LayerChoice(kernel=3) for name in five}
    layers["conv_stem"] = LayerChoice(separable=True)
    skip = ["blocks.4", "blocks.13"]
    config = Config(layers=layers, skip=skip)
    passes = tvm.transform.Sequential([SkipBlocks(config), ShrinkKernel(config), SeparableConv(config)])
    new = passes(loaded.mod)

    before, after = weights_of(loaded.mod), weight_values(new["main"])
    skipped_layers = [
        f"blocks.{i}.{part}" for i in (4, 13) for part in ("_expand_conv", "_depthwise_conv", "_project_conv")
    ]
    expected = sum(v.size for v in before.values())
    expected -= sum(before[f"{n}.weight"].size + before[f"{n}.bias"].size for n in skipped_layers)
    expected -= sum(before[f"{n}.weight"].shape[0] * 16 for n in five if n not in skipped_layers)
    expected -= 32 * 3 * 9 - (3 * 9 + 32 * 3)
    assert sum(v.size for v in after.values()) == expected
    assert after["blocks.3._depthwise_conv.weight"].shape == (144, 1, 3, 3)
    assert after["conv_stem.dw.weight"].shape == (3, 1, 3, 3)

    simulated = dict(before)
    for name in five:
        simulated[f"{name}.weight"] = zero_outside_centre(before[f"{name}.weight"], 3)
    simulated["conv_stem.weight"] = simulate_separable(before["conv_stem.weight"])
    x = loaded.example_inputs()["input"]
    materialized = host.run(host.build(bind_weights(new)), [x])[0]
    simulation = simulate(loaded, skip, simulated, x)
    assert materialized.shape == simulation.shape == (1, 1000)
    assert rel_max_diff(materialized, simulation) <= TOL
    error = separable_errors(loaded.mod, ["conv_stem"])["conv_stem"]
    print(f"EfficientNet-Lite0 conv_stem separable rank-1 relative error: {error:.4f}")
    assert 0.0 < error < 1.0
