"""Width pruning: coupling analysis, the PruneChannels pass and its mask simulation, compiled and compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.passes.channel_groups import ChannelGroup, channel_groups
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.weights import weight_values
from hanasc.passes.width import PruneChannels, importance, kept_channels, width_masks
from hanasc.targets import host


class ConcatShuffle(nn.Module):
    """Two convs concatenated into a third; a channel shuffle (a reshape mixing channels) before a fourth."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.merge = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.merge(torch.cat([torch.relu(self.left(x)), self.right(x)], dim=1))
        y = y.reshape(1, 2, 4, 8, 8).transpose(1, 2).reshape(1, 8, 8, 8)
        return self.head(y).mean(dim=(2, 3))


class OneChannel(nn.Module):
    """A 1-channel bottleneck: width 0.25 leaves no channel of it, 0.5 rounds up to one."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(3, 1, 3, padding=1)
        self.expand = nn.Conv2d(1, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(torch.relu(self.squeeze(x))).mean(dim=(2, 3))


class SigmoidChain(nn.Module):
    """conv -> depthwise conv -> sigmoid -> conv: a pruned channel is 0.5 after the sigmoid, not 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.project = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.sigmoid(self.dw(self.conv(x)))).mean(dim=(2, 3))


def _export(module: nn.Module, name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    path = folder / f"{name}.onnx"
    torch.onnx.export(
        module.eval(),
        (torch.randn(1, 3, 8, 8),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def models(test_models, tmp_path_factory) -> dict[str, hanasc.frontend.loading.LoadedModel]:
    folder = tmp_path_factory.mktemp("width_models")
    loaded = {name: hanasc.load_model(path) for name, path in test_models.items()}
    loaded["concat_shuffle"] = hanasc.load_model(_export(ConcatShuffle(), "concat_shuffle", folder))
    loaded["sigmoid_chain"] = hanasc.load_model(_export(SigmoidChain(), "sigmoid_chain", folder))
    loaded["one_channel"] = hanasc.load_model(_export(OneChannel(), "one_channel", folder))
    return loaded


def _by_name(groups: list[ChannelGroup]) -> dict[str, ChannelGroup]:
    return {g.name: g for g in groups}


def _config(widths: dict[str, float]) -> Config:
    return Config(layers={name: LayerChoice(width=w) for name, w in widths.items()})


def _param_count(mod) -> int:
    return sum(v.size for v in weight_values(mod["main"]).values())


def _shapes(mod) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in weight_values(mod["main"]).items()}


def _pruned_equals_simulation(model, config: Config):
    """Compile the pruned module and the original with masked weights; they must agree (relative 1e-4)."""
    pruned = PruneChannels(config)(model.mod)
    inputs = list(model.example_inputs().values())
    original = weight_values(model.mod["main"])
    masked = width_masks(model.mod["main"], original, config)
    assert {k: v.shape for k, v in masked.items()} == {k: v.shape for k, v in original.items()}
    got = host.run(host.build(bind_weights(pruned)), inputs)[0]
    sim = host.run(host.build(bind_weights(model.mod, masked)), inputs)[0]
    assert got.shape == sim.shape
    scale = float(np.abs(sim).max())
    assert scale > 0
    assert float(np.abs(got - sim).max()) <= 1e-4 * scale
    return pruned, got


# ---------------------------------------------------------------------------------------------- analysis
def test_inverted_residual_groups(models):
    groups = _by_name(
        channel_groups(models["inverted_residual"].mod["main"], models["inverted_residual"].mod)
    )
    assert set(groups) == {"stem.stem.0", "block.block.0"}
    expand = groups["block.block.0"]
    assert expand.prunable and expand.channels == 64
    assert expand.producers == ["block.block.0"]
    assert expand.depthwise == ["block.block.3"]
    assert expand.consumers == ["block.block.6"]
    assert expand.layers == ["block.block.0", "block.block.3"]
    assert len(expand.tir_calls) == 4 and len(expand.depthwise_calls) == 1
    residual = groups["stem.stem.0"]
    assert residual.producers == ["stem.stem.0", "block.block.6"]  # the skip add couples them
    assert residual.consumers == ["block.block.0"]
    assert not residual.prunable and "model output" in residual.reason


def test_analysis_without_module_recognises_clip_by_name(models):
    func = models["inverted_residual"].mod["main"]
    assert [g.summary() for g in channel_groups(func)] == [
        g.summary() for g in channel_groups(func, models["inverted_residual"].mod)
    ]


def test_se_hardswish_groups(models):
    groups = _by_name(channel_groups(models["se_hardswish"].mod["main"]))
    gated = groups["conv"]
    assert gated.prunable and gated.producers == ["conv", "se_expand"]  # the SE multiply couples
    assert gated.consumers == ["se_reduce", "project"]
    assert groups["se_reduce"].prunable and groups["se_reduce"].consumers == ["se_expand"]
    assert not groups["project"].prunable


def test_dense_head_groups(models):
    groups = _by_name(channel_groups(models["dense_head"].mod["main"]))
    conv = groups["conv"]
    # conv -> maxpool -> flatten [1,8,14,14] -> [1,1568]: each channel is a block of 196 fc1 inputs
    assert conv.prunable and conv.consumers == ["fc1"]
    assert [(s.param, s.axis, s.block) for s in conv.slices if s.role == "consumer"] == [
        ("fc1.weight", 1, 196)
    ]
    assert groups["fc1"].prunable and groups["fc1"].consumers == ["fc2"]
    assert not groups["fc2"].prunable and "model output" in groups["fc2"].reason


def test_concat_and_mixing_reshape_are_unprunable(models):
    model = models["concat_shuffle"]
    groups = _by_name(channel_groups(model.mod["main"], model.mod))
    assert "concat" in groups["left"].reason and "concat" in groups["right"].reason
    assert "reshape mixes channels" in groups["merge"].reason
    assert "model output" not in groups["merge"].reason
    with pytest.raises(ConfigError, match=r"'merge'.*cannot be pruned.*reshape mixes"):
        PruneChannels(_config({"merge": 0.5}))(model.mod)
    with pytest.raises(ConfigError, match=r"'left'.*concat"):
        PruneChannels(_config({"left": 0.5}))(model.mod)


# ------------------------------------------------------------------------------------ pass vs simulation
def test_inverted_residual_expand_group(models):
    model = models["inverted_residual"]
    config = _config({"block.block.0": 0.5, "block.block.3": 0.5})
    pruned, got = _pruned_equals_simulation(model, config)
    shapes = _shapes(pruned)
    assert shapes["block.block.0.weight"] == (32, 16, 1, 1) and shapes["block.block.0.bias"] == (32,)
    assert shapes["block.block.3.weight"] == (32, 1, 3, 3) and shapes["block.block.3.bias"] == (32,)
    assert shapes["block.block.6.weight"] == (16, 32, 1, 1) and shapes["block.block.6.bias"] == (16,)
    assert _param_count(model.mod) - _param_count(pruned) == 32 * (16 + 1) + 32 * (9 + 1) + 16 * 32
    script = pruned["main"].script(show_meta=False)
    assert "groups=32" in script and "R.shape([1, 32, 1, 1])" in script
    reference = host.run(host.build(bind_weights(model.mod)), list(model.example_inputs().values()))[0]
    assert not np.allclose(got, reference, atol=1e-3)  # pruning really changed the model


def test_inverted_residual_config_errors(models):
    mod = models["inverted_residual"].mod
    with pytest.raises(ConfigError, match=r"'block.block.0'.*'block.block.3'.*same width"):
        PruneChannels(_config({"block.block.0": 0.5}))(mod)
    with pytest.raises(ConfigError, match=r"'block.block.0'.*0.5.*'block.block.3'.*0.75"):
        PruneChannels(_config({"block.block.0": 0.5, "block.block.3": 0.75}))(mod)
    with pytest.raises(ConfigError, match=r"'block.block.6'.*'stem.stem.0' cannot be pruned.*model output"):
        PruneChannels(_config({"block.block.6": 0.75}))(mod)


def test_se_hardswish_prune(models):
    model = models["se_hardswish"]
    config = _config({"conv": 0.5, "se_expand": 0.5, "se_reduce": 0.5})
    pruned, _ = _pruned_equals_simulation(model, config)
    shapes = _shapes(pruned)
    # half of 24 channels is 12, kept as 16: a multiple of the 8-channel vector block
    assert shapes["conv.weight"] == (16, 3, 3, 3) and shapes["se_expand.weight"] == (16, 3, 1, 1)
    assert shapes["se_reduce.weight"] == (3, 16, 1, 1) and shapes["project.weight"] == (24, 16, 1, 1)
    with pytest.raises(ConfigError, match=r"'conv'.*'se_expand'"):
        PruneChannels(_config({"conv": 0.5}))(model.mod)


def test_se_importance_sums_coupled_producers(models):
    func = models["se_hardswish"].mod["main"]
    weights = weight_values(func)
    group = _by_name(channel_groups(func))["conv"]
    l1 = np.abs(weights["conv.weight"]).sum(axis=(1, 2, 3)) + np.abs(weights["se_expand.weight"]).sum(
        axis=(1, 2, 3)
    )
    np.testing.assert_allclose(importance(group, weights), l1, rtol=1e-6)
    kept = kept_channels(func, weights, _config({"conv": 0.25, "se_expand": 0.25}))
    np.testing.assert_array_equal(kept["conv"], np.sort(np.argsort(-l1, kind="stable")[:6]))


def test_dense_head_prune(models):
    model = models["dense_head"]
    config = _config({"conv": 0.5, "fc1": 0.75})
    pruned, _ = _pruned_equals_simulation(model, config)
    shapes = _shapes(pruned)
    assert shapes["conv.weight"] == (4, 1, 3, 3)
    assert shapes["fc1.weight"] == (48, 4 * 196) and shapes["fc1.bias"] == (48,)
    assert shapes["fc2.weight"] == (10, 48)
    with pytest.raises(ConfigError, match=r"'fc2'.*model output"):
        PruneChannels(_config({"fc2": 0.5}))(model.mod)


def test_plain_conv_prune_keeps_most_important(models):
    model = models["plain_conv"]
    config = _config({"body.body.0": 0.25, "body.body.3": 0.75})
    weights = weight_values(model.mod["main"])
    kept = kept_channels(model.mod["main"], weights, config)
    l1 = np.abs(weights["body.body.0.weight"]).sum(axis=(1, 2, 3))
    expected = np.sort(np.argsort(-l1)[:4])
    np.testing.assert_array_equal(kept["body.body.0"], expected)
    assert len(kept["body.body.3"]) == 24 and "body.body.6" not in kept
    pruned, _ = _pruned_equals_simulation(model, config)
    shapes = _shapes(pruned)
    assert shapes["body.body.0.weight"] == (4, 3, 3, 3)
    assert shapes["body.body.3.weight"] == (24, 4, 5, 5) and shapes["body.body.6.weight"] == (32, 24, 3, 3)
    np.testing.assert_array_equal(
        weight_values(pruned["main"])["body.body.0.weight"], weights["body.body.0.weight"][expected]
    )


def test_masks_hold_where_activation_of_zero_is_not_zero(models):
    # zeroing the producer's and the depthwise chain's filters and biases alone would leak sigmoid(0) = 0.5
    # into the consumer: its input columns must be zeroed too
    model = models["sigmoid_chain"]
    config = _config({"conv": 0.5, "dw": 0.5})
    pruned, _ = _pruned_equals_simulation(model, config)
    assert _shapes(pruned)["dw.weight"] == (4, 1, 3, 3) and _shapes(pruned)["project.weight"] == (4, 4, 1, 1)
    weights = weight_values(model.mod["main"])
    masked = width_masks(model.mod["main"], weights, config)
    dropped = np.flatnonzero(
        ~np.isin(np.arange(8), kept_channels(model.mod["main"], weights, config)["conv"])
    )
    assert len(dropped) == 4 and not masked["project.weight"][:, dropped].any()


def test_identity_config_leaves_module_alone(models):
    mod = models["plain_conv"].mod
    assert PruneChannels(Config())(mod)["main"].same_as(mod["main"])


def test_width_leaving_no_channel(models):
    model = models["one_channel"]
    with pytest.raises(ConfigError, match=r"'squeeze'.*leaves no channel"):
        PruneChannels(_config({"squeeze": 0.25}))(model.mod)
    # 0.5 of one channel rounds to one: allowed and a no-op on shapes
    pruned = PruneChannels(_config({"squeeze": 0.5}))(model.mod)
    assert _shapes(pruned)["squeeze.weight"] == (1, 3, 3, 3)


# ------------------------------------------------------------------------------------ EfficientNet-Lite0
@pytest.mark.slow
def test_efficientnet_lite0(effnet_path):
    model = hanasc.load_model(effnet_path)
    groups = channel_groups(model.mod["main"], model.mod)
    assert len(groups) == 25
    unprunable = [g for g in groups if not g.prunable]
    assert [g.name for g in unprunable] == ["fc"] and "model output" in unprunable[0].reason
    stage = _by_name(groups)["blocks.5._project_conv"]  # three blocks joined by residual adds
    assert stage.producers == ["blocks.5._project_conv", "blocks.6._project_conv", "blocks.7._project_conv"]
    chosen = ["conv_stem", "blocks.1._expand_conv", "blocks.5._project_conv", "conv_head"]
    widths = {layer: 0.5 for name in chosen for layer in _by_name(groups)[name].layers}
    pruned, _ = _pruned_equals_simulation(model, _config(widths))
    shapes = _shapes(pruned)
    assert shapes["conv_stem.weight"] == (16, 3, 3, 3)
    assert shapes["blocks.0._depthwise_conv.weight"] == (16, 1, 3, 3)
    assert shapes["blocks.0._project_conv.weight"] == (16, 16, 1, 1)
    assert shapes["blocks.1._depthwise_conv.weight"] == (48, 1, 3, 3)
    assert shapes["blocks.8._expand_conv.weight"] == (480, 40, 1, 1)
    assert shapes["fc.weight"] == (1000, 640)
    removed = 16 * (27 + 1) + 16 * (9 + 1) + 16 * 16  # stem group
    removed += 48 * (16 + 1) + 48 * (9 + 1) + 24 * 48  # blocks.1 expand group
    removed += 40 * (241 + 481 + 481) + 3 * 480 * 40  # 80-channel stage: 3 producers, 3 consumers
    removed += 640 * (320 + 1) + 1000 * 640  # head
    assert _param_count(model.mod) - _param_count(pruned) == removed


def test_widths_keep_whole_vector_blocks():
    """Multiples of 8 channels stay multiples of 8 (no 2-channel blocks); other counts round as before."""
    from hanasc.passes.width import kept_count

    assert [kept_count(24, w) for w in (0.25, 0.5, 0.75, 1.0)] == [6, 16, 16, 24]
    assert [kept_count(96, w) for w in (0.25, 0.5, 0.75)] == [24, 48, 72]
    assert kept_count(8, 0.5) == 4 and kept_count(16, 0.25) == 4  # under one block: as computed
    assert [kept_count(6, w) for w in (0.25, 0.5, 0.75)] == [2, 3, 5]
