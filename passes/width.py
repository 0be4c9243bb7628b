"""Channel-width pruning: the ``PruneChannels`` Relax pass and its exact simulation by weight masks.

Each prunable :class:`~hanasc.passes.channel_groups.ChannelGroup` keeps ``floor(C * width + 0.5)`` of its
``C`` channels, chosen by importance (the L1 norm of the producers' filters, summed over the group's
producers) and kept in their original order. The pass slices every parameter axis of the group (producer
outputs, biases, depthwise chain, consumer inputs), sets the depthwise convs' ``groups``, rewrites hard-coded
reshape shapes and turns Clip's shape-specialized ``call_tir`` maximum/minimum on pruned tensors into
``relax.maximum``/``relax.minimum``.
:func:`width_masks` gives same-shape weights that make the original graph compute what the pruned one does.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from hanasc.passes.channel_groups import ChannelGroup, ParamSlice, channel_groups
from hanasc.passes.config import Config, ConfigError
from hanasc.passes.weights import WeightEditor, weight_values

CHANNEL_MULTIPLE = 8  # the smallest channel block the CPU targets' vector kernels run at full width


def kept_count(channels: int, width: float) -> int:
    """How many of ``channels`` a width keeps: ``channels x width`` rounded half up, to a multiple of
    :data:`CHANNEL_MULTIPLE` when ``channels`` is one and keeps at least that many. Otherwise the blocked
    layout falls back to 2-channel blocks: a 0.75 width of 24 channels (18) ran its 1x1 convs 7-12x slower
    than their prior (a MobileNetV2-style net at 64x64, int8 and fp32, one Zen 4 core), where 16 or 24
    run at full vector width."""
    if channels % CHANNEL_MULTIPLE == 0 and CHANNEL_MULTIPLE <= channels * width < channels:
        return math.floor(channels * width / CHANNEL_MULTIPLE + 0.5) * CHANNEL_MULTIPLE
    return math.floor(channels * width + 0.5)


def group_widths(groups: list[ChannelGroup], config: Config) -> dict[str, float]:
    """The width each group is pruned to, checked against the Config (ConfigError on conflicts)."""
    widths: dict[str, float] = {}
    for group in groups:
        chosen = {layer: float(config.choice(layer).width) for layer in group.layers}
        narrowed = [(layer, w) for layer, w in chosen.items() if w < 1.0]
        if not group.prunable:
            if narrowed:
                layer, w = narrowed[0]
                raise ConfigError(
                    f"layer '{layer}': width={w} is not possible: its channel group '{group.name}' "
                    f"cannot be pruned ({group.reason})"
                )
            continue
        values = sorted(set(chosen.values()))
        if len(values) > 1:
            a, b = (next(layer for layer, w in chosen.items() if w == v) for v in values[:2])
            raise ConfigError(
                f"layers '{a}' (width={values[0]}) and '{b}' (width={values[1]}) share channel group "
                f"'{group.name}' and must have the same width"
            )
        width = values[0] if values else 1.0
        if width < 1.0 and kept_count(group.channels, width) < 1:
            raise ConfigError(
                f"layer '{group.name}': width={width} leaves no channel of {group.channels} "
                f"(group '{group.name}')"
            )
        widths[group.name] = width
    return widths


def importance(group: ChannelGroup, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Per-channel importance: L1 norm of each producer's filter, summed over the group's producers."""
    total = np.zeros(group.channels, dtype=np.float64)
    for s in group.slices:
        if s.role == "producer":
            w = np.moveaxis(np.abs(weights[s.param].astype(np.float64)), s.axis, 0)
            total += w.reshape(group.channels, -1).sum(axis=1)
    return total


def kept_channels(
    source: relax.Function | list[ChannelGroup], weights: dict[str, np.ndarray], config: Config
) -> dict[str, np.ndarray]:
    """The channel indices (ascending) each group keeps, by group name, for the groups the Config narrows."""
    groups = channel_groups(source) if isinstance(source, relax.Function) else source
    kept = {}
    for group in groups:
        width = group_widths([group], config).get(group.name, 1.0)
        if width >= 1.0:
            continue
        n = kept_count(group.channels, width)
        order = np.argsort(-importance(group, weights), kind="stable")
        kept[group.name] = np.sort(order[:n]).astype(np.int64)
    return kept


def _slice_plan(
    groups: list[ChannelGroup], kept: dict[str, np.ndarray]
) -> dict[str, list[tuple[ParamSlice, np.ndarray]]]:
    """Per parameter: the axes to slice and the channel indices each keeps."""
    plan: dict[str, list[tuple[ParamSlice, np.ndarray]]] = {}
    for group in groups:
        if group.name in kept:
            for s in group.slices:
                plan.setdefault(s.param, []).append((s, kept[group.name]))
    return plan


def width_masks(
    source: relax.Function | list[ChannelGroup],
    weights: dict[str, np.ndarray],
    config: Config,
) -> dict[str, np.ndarray]:
    """Same-shape weights under which the ORIGINAL graph computes what the pruned one does.

    A pruned channel only leaves its group through the consumers' input columns, so zeroing those makes the
    outputs exact whatever the channel carries (biases and activations such as sigmoid(0) = 0.5 included).
    The producers' filters, biases and the depthwise chain entries of the channel are zeroed as well, so
    the masked weights also show which parameters pruning removes. Returns every weight (copies where
    changed).
    """
    groups = channel_groups(source) if isinstance(source, relax.Function) else source
    kept = kept_channels(groups, weights, config)
    out = dict(weights)
    for name, entries in _slice_plan(groups, kept).items():
        value = np.array(weights[name], copy=True)
        for s, idx in entries:
            mask = np.zeros(value.shape[s.axis], dtype=bool)
            mask[s.indices(idx)] = True
            shape = [1] * value.ndim
            shape[s.axis] = -1
            value = np.where(mask.reshape(shape), value, np.zeros((), value.dtype))
        out[name] = value.astype(weights[name].dtype)
    return out


@mutator
class _PruneRewriter(PyExprMutator):
    """Substitute the sliced weight variables and fix the shape-carrying calls of pruned groups."""

    def __init__(self, new_vars: dict, calls: dict, mod=None) -> None:
        super().__init__(mod)
        self.new_vars = new_vars  # old weight Var -> new Var
        self.calls = calls  # original Call -> ("groups", n) | ("reshape", axis, dim) | ("tir", kind)

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.new_vars.get(var, var)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        action = self.calls.get(call)
        if action is None:
            return super().visit_call_(call)
        if action[0] == "tir":
            x, bound = (self.visit_expr(f) for f in call.args[1].fields)
            return relax.op.maximum(x, bound) if action[1] == "maximum" else relax.op.minimum(x, bound)
        args = [self.visit_expr(a) for a in call.args]
        if action[0] == "groups":
            a = call.attrs
            return relax.op.nn.conv2d(
                args[0],
                args[1],
                strides=a.strides,
                padding=a.padding,
                dilation=a.dilation,
                groups=action[1],
                data_layout=a.data_layout,
                kernel_layout=a.kernel_layout,
                out_layout=a.out_layout,
                out_dtype=a.out_dtype,
            )
        shape = [int(d) for d in call.args[1].values]
        shape[action[1]] = action[2]
        return relax.op.reshape(args[0], shape)


def prune_function(
    func: relax.Function, groups: list[ChannelGroup], kept: dict[str, np.ndarray]
) -> relax.Function:
    """``func`` with the kept channels of each group materialized (parameters really shrink)."""
    editor = WeightEditor(func)
    old_vars = {name: editor.var(name) for name in editor.vars}
    for name, entries in _slice_plan(groups, kept).items():
        value = editor.value(name)
        for s, idx in entries:
            value = np.take(value, s.indices(idx), axis=s.axis)
        editor.set(name, value)
    new_vars = {old: editor.var(name) for name, old in old_vars.items() if not editor.var(name).same_as(old)}
    calls: dict = {}
    for group in groups:
        if group.name not in kept:
            continue
        n = len(kept[group.name])
        calls.update({c: ("groups", n) for c in group.depthwise_calls})
        calls.update({c: ("reshape", axis, n * block) for c, axis, block in group.reshape_calls})
        calls.update({c: ("tir", kind) for c, kind in group.tir_calls})
    body = _PruneRewriter(new_vars, calls).visit_expr(func.body)
    return editor.finish(relax.Function(list(func.params), body, None, func.is_pure))


@relax.transform.function_pass(opt_level=0, name="hanasc.PruneChannels")
class PruneChannels:
    """Prune each channel group to the width its layers choose in ``config`` (a :class:`Config`)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def transform_function(self, func: relax.Function, mod, ctx) -> relax.Function:
        if not func.attrs or "params" not in func.attrs:
            return func
        groups = channel_groups(func, mod)
        kept = kept_channels(groups, weight_values(func), self.config)
        return prune_function(func, groups, kept) if kept else func
