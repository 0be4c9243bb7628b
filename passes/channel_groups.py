"""Channel-coupling analysis of a hanasc Relax ``main``: which layers' output channels are pruned together.

A :class:`ChannelGroup` starts at one or more PRODUCER layers (conv / dense with a named weight parameter)
and follows their output channels downstream: through channel-preserving elementwise ops (bias adds,
activations, the ``call_tir`` maximum/minimum that ONNX Clip imports as), pooling, reductions over other
axes, reshapes that keep each channel a contiguous block (``[N,C,1,1] -> [N,C]``, ``[N,C,H,W] ->
[N,C*H*W]``) and depthwise convs (which carry the channels on). It ends at the CONSUMER layers whose input
channels must follow. A binary elementwise op between two activation tensors (residual add, squeeze-excite
multiply) joins the groups of its operands: coupled layers share one decision. Channels that reach the model
output, a reshape that mixes them with other positions, a concat, or an op the analysis does not understand
make the group unprunable, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import relax

from hanasc.passes.channel_ops import (
    BINARY_ELEMENTWISE,
    POOLS,
    REDUCTIONS,
    SHAPE_ONLY,
    UNARY_ELEMENTWISE,
    channel_reshape,
    op_name,
    static_shape,
    tir_clip_op,
)
from hanasc.passes.channel_spaces import ChannelSpaces, ParamSlice, Track, View
from hanasc.passes.weights import layer_of_weight, weight_params


@dataclass
class ChannelGroup:
    """Channels pruned together: producers, depthwise chain, consumers, and the IR sites to rewrite."""

    name: str
    channels: int
    producers: list[str]
    depthwise: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    slices: list[ParamSlice] = field(default_factory=list)
    reason: str | None = None
    deciders: list[str] = field(default_factory=list)  # layers whose Config width decides the group
    # rewrite sites (original Relax Call nodes): depthwise convs, reshapes (axis, block), Clip call_tirs
    depthwise_calls: list = field(default_factory=list, repr=False)
    reshape_calls: list = field(default_factory=list, repr=False)
    tir_calls: list = field(default_factory=list, repr=False)

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def layers(self) -> list[str]:
        """The layers whose width choice this group's decision is (coupled layers share one decision)."""
        return list(self.deciders)

    def summary(self) -> str:
        state = "prunable" if self.prunable else f"unprunable: {self.reason}"
        return f"{self.name} [{self.channels}] producers={self.producers} ({state})"


class _Analyzer(ChannelSpaces):
    """One forward walk over ``main``'s bindings, with union-find over channel spaces."""

    def __init__(self, func: relax.Function, mod=None) -> None:
        super().__init__()
        self.func = func
        self.mod = mod
        self.params = weight_params(func)
        self.track: dict[relax.Var, Track] = {}
        self.views: dict[relax.Var, View] = {}
        self.layer_order: dict[str, int] = {}

    def reject(self, expr: relax.Expr, reason: str) -> None:
        """Mark the group of every tracked tensor in ``expr`` unprunable."""
        for var in self._vars_in(expr):
            if var in self.track:
                reasons = self.space(self.track[var]).reasons
                if reason not in reasons:
                    reasons.append(reason)

    def _vars_in(self, expr) -> list[relax.Var]:
        if isinstance(expr, relax.Var):
            return [expr]
        if isinstance(expr, relax.Tuple):
            return [v for f in expr.fields for v in self._vars_in(f)]
        if isinstance(expr, relax.Call):
            return [v for a in expr.args for v in self._vars_in(a)]
        return []

    def view_of(self, expr) -> View | None:
        if isinstance(expr, relax.Var):
            if expr.name in self.params and self.params[expr.name].same_as(expr):
                return View(expr.name, tuple(range(len(static_shape(expr) or ()))))
            return self.views.get(expr)
        return None

    # walk ---------------------------------------------------------------------------------------------
    def run(self) -> list[ChannelGroup]:
        body = self.func.body
        for block in body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.visit(binding.var, binding.value)
                else:
                    self.reject(binding.value, "match_cast")
        self.reject(body.body, "reaches the model output")
        return self.groups()

    def visit(self, var: relax.Var, value: relax.Expr) -> None:
        if isinstance(value, relax.Var):
            if value in self.track:
                self.track[var] = self.track[value]
            elif (view := self.view_of(value)) is not None:
                self.views[var] = view
            return
        if not isinstance(value, relax.Call):
            self.reject(value, f"{type(value).__name__} ({var.name})")
            return
        name = op_name(value)
        handler = {
            "relax.nn.conv2d": self.conv2d,
            "relax.matmul": self.matmul,
            "relax.call_tir": self.call_tir,
            "relax.permute_dims": self.permute_dims,
        }.get(name)
        if handler is None:
            if name in BINARY_ELEMENTWISE:
                handler = self.binary
            elif name in UNARY_ELEMENTWISE:
                handler = self.unary
            elif name in REDUCTIONS:
                handler = self.reduction
            elif name in POOLS:
                handler = self.pool
            elif name in SHAPE_ONLY:
                handler = self.shape_only
            else:
                self.reject(value, f"{name or 'call'} not understood ({var.name})")
                return
        handler(var, value)

    def _producer(self, var, layer: str, param: str, axis: int, channels: int, out_axis: int) -> int:
        s = self.new_space(channels)
        self.spaces[s].producers.append(layer)
        self.spaces[s].slices.append(ParamSlice(param, axis, "producer"))
        self.layer_order.setdefault(layer, len(self.layer_order))
        self.track[var] = Track(s, out_axis)
        return s

    def conv2d(self, var, call) -> None:
        x, w = call.args
        attrs = call.attrs
        wview = self.view_of(w)
        in_shape, out_shape = static_shape(x), static_shape(call)
        if (
            wview is None
            or wview.axis_map != (0, 1, 2, 3)
            or attrs.data_layout != "NCHW"
            or attrs.kernel_layout != "OIHW"
            or attrs.out_layout != "NCHW"
            or in_shape is None
            or out_shape is None
        ):
            self.reject(x, f"conv2d without a named OIHW weight ({var.name})")
            return
        layer = layer_of_weight(wview.param) or wview.param
        groups, c_in, c_out = int(attrs.groups), in_shape[1], out_shape[1]
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is not None and (t.axis != 1 or t.block != 1):
            self.reject(x, f"channels reach {layer} on another axis")
            t = None
        if groups == 1:
            if t is not None:
                sp = self.space(t)
                sp.consumers.append(layer)
                sp.slices.append(ParamSlice(wview.param, 1, "consumer"))
            self._producer(var, layer, wview.param, 0, c_out, 1)
        elif groups == c_in == c_out and t is not None:
            sp = self.space(t)
            sp.depthwise.append(layer)
            sp.slices.append(ParamSlice(wview.param, 0, "depthwise"))
            sp.depthwise_calls.append(call)
            self.layer_order.setdefault(layer, len(self.layer_order))
            self.track[var] = t
        elif groups == c_in == c_out:
            s = self._producer(var, layer, wview.param, 0, c_out, 1)
            self.spaces[s].reasons.append(f"depthwise conv {layer} reads an input that cannot be pruned")
        else:
            if t is not None:
                self.reject(x, f"consumed by grouped conv {layer}")
            s = self._producer(var, layer, wview.param, 0, c_out, 1)
            self.spaces[s].reasons.append(f"{layer} is a grouped conv (groups={groups})")

    def matmul(self, var, call) -> None:
        x, w = call.args
        wview = self.view_of(w)
        x_shape, out_shape = static_shape(x), static_shape(call)
        if wview is None or len(wview.axis_map) != 2 or None in wview.axis_map or x_shape is None:
            self.reject(call, f"matmul without a named 2-D weight ({var.name})")
            return
        layer = layer_of_weight(wview.param) or wview.param
        in_axis, out_axis = wview.axis_map
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is not None:
            if t.axis != len(x_shape) - 1:
                self.reject(x, f"channels reach {layer} on a non-feature axis")
            else:
                sp = self.space(t)
                sp.consumers.append(layer)
                sp.slices.append(ParamSlice(wview.param, in_axis, "consumer", t.block))
        self._producer(var, layer, wview.param, out_axis, out_shape[-1], len(out_shape) - 1)

    def unary(self, var, call) -> None:
        x = call.args[0]
        if isinstance(x, relax.Var) and x in self.track:
            if static_shape(x) == static_shape(call):
                self.track[var] = self.track[x]
            else:
                self.reject(x, f"{op_name(call)} changes the shape ({var.name})")

    def call_tir(self, var, call) -> None:
        args = call.args[1]
        fields = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        tracked = [f for f in fields if isinstance(f, relax.Var) and f in self.track]
        if not tracked:
            return
        kind = tir_clip_op(call, self.mod)
        if kind is None or tracked != [fields[0]]:
            self.reject(args, f"call_tir {call.args[0].name_hint} cannot be re-specialized ({var.name})")
            return
        t = self.track[fields[0]]
        self.space(t).tir_calls.append((call, kind))
        self.track[var] = t

    def binary(self, var, call) -> None:
        out_shape = static_shape(call)
        a, b = call.args
        ops = [(x, self.track.get(x) if isinstance(x, relax.Var) else None) for x in (a, b)]
        live = [(x, t) for x, t in ops if t is not None]
        if not live or out_shape is None:
            return
        n = len(out_shape)
        aligned = []
        for x, t in live:
            k = t.axis + n - len(static_shape(x))
            if static_shape(x)[t.axis] != out_shape[k]:
                self.reject(x, f"channels broadcast in {op_name(call)} ({var.name})")
                return
            aligned.append(Track(t.space, k, t.block))
        if len(aligned) == 2:
            t0, t1 = aligned
            if (
                t0.axis != t1.axis
                or t0.block != t1.block
                or self.space(t0).channels != self.space(t1).channels
            ):
                self.reject(call, f"{op_name(call)} mixes different channel axes ({var.name})")
                return
            self.union(t0.space, t1.space)
            self.track[var] = Track(self.find(t0.space), t0.axis, t0.block)
            return
        t = aligned[0]
        other = b if live[0][0].same_as(a) else a
        if self._side_operand(other, live[0][0], t, n, var):
            self.track[var] = t

    def _side_operand(self, other, x, t: Track, n: int, var) -> bool:
        """Check (and record) the non-activation operand ``other`` of a binary op on the tracked ``x``."""
        shape = static_shape(other)
        if shape is None:
            self.reject(x, f"operand of unknown shape ({var.name})")
            return False
        j = t.axis - (n - len(shape))
        if j < 0 or shape[j] == 1:
            return True  # broadcast along the channels: nothing to slice
        view = self.view_of(other)
        sp = self.space(t)
        if view is None or view.axis_map[j] is None or t.block != 1:
            self.reject(x, f"per-channel operand that cannot be sliced ({var.name})")
            return False
        axis = view.axis_map[j]
        sp.slices.append(ParamSlice(view.param, axis, "per_channel"))
        sp.reshape_calls += [(c, k, 1) for c, k in view.shape_axis(axis)]
        return True

    def reduction(self, var, call) -> None:
        x = call.args[0]
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is None:
            return
        ndim = len(static_shape(x))
        axes = call.attrs.axis
        reduced = list(range(ndim)) if axes is None else [int(a) % ndim for a in axes]
        if t.axis in reduced:
            self.reject(x, f"{op_name(call)} reduces over the channels ({var.name})")
            return
        shift = 0 if call.attrs.keepdims else sum(1 for a in reduced if a < t.axis)
        self.track[var] = Track(t.space, t.axis - shift, t.block)

    def pool(self, var, call) -> None:
        x = call.args[0]
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is None:
            return
        if call.attrs.layout != "NCHW" or call.attrs.out_layout != "NCHW" or t.axis != 1:
            self.reject(x, f"{op_name(call)} in a layout other than NCHW ({var.name})")
            return
        self.track[var] = t

    def shape_only(self, var, call) -> None:
        x = call.args[0]
        in_shape, out_shape = static_shape(x), static_shape(call)
        if op_name(call) == "relax.reshape" and not isinstance(call.args[1], relax.ShapeExpr):
            self.reject(x, f"reshape to a computed shape ({var.name})")
            return
        view = self.view_of(x)
        if view is not None and op_name(call) == "relax.reshape" and in_shape and out_shape:
            self._reshape_view(var, call, view, in_shape, out_shape)
            return
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is None:
            return
        channels = self.space(t).channels
        where = (
            channel_reshape(in_shape, t.axis, channels, t.block, out_shape)
            if in_shape and out_shape
            else None
        )
        if where is None:
            self.reject(x, f"reshape mixes channels with other positions ({var.name})")
            return
        k, block = where
        if op_name(call) == "relax.reshape":
            self.space(t).reshape_calls.append((call, k, block))
        self.track[var] = Track(t.space, k, block)

    def _reshape_view(self, var, call, view: View, in_shape, out_shape) -> None:
        """A reshape of a weight that only adds or drops size-1 axes keeps a known axis map."""
        kept_in = [i for i, d in enumerate(in_shape) if d != 1]
        kept_out = [i for i, d in enumerate(out_shape) if d != 1]
        if [in_shape[i] for i in kept_in] != [out_shape[i] for i in kept_out]:
            return
        amap: list[int | None] = [None] * len(out_shape)
        for i, o in zip(kept_in, kept_out, strict=True):
            amap[o] = view.axis_map[i]
        amap_t = tuple(amap)
        self.views[var] = View(view.param, amap_t, (*view.reshapes, (call, amap_t)))

    def permute_dims(self, var, call) -> None:
        x = call.args[0]
        shape = static_shape(x)
        if shape is None:
            self.reject(x, f"permute_dims of unknown shape ({var.name})")
            return
        axes = list(range(len(shape)))[::-1] if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
        view = self.view_of(x)
        if view is not None:
            amap = tuple(view.axis_map[a] for a in axes)
            # earlier reshape steps keep their own axis maps; only the final map changes
            self.views[var] = View(view.param, amap, view.reshapes)
            return
        t = self.track.get(x) if isinstance(x, relax.Var) else None
        if t is not None:
            self.track[var] = Track(t.space, axes.index(t.axis), t.block)

    # result -------------------------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        roots = sorted({self.find(i) for i in range(len(self.spaces))})
        groups = []
        all_producers = {p for r in roots for p in self.spaces[r].producers}
        for r in roots:
            sp = self.spaces[r]
            producers = sorted(dict.fromkeys(sp.producers), key=self.layer_order.__getitem__)
            depthwise = list(dict.fromkeys(sp.depthwise))
            deciders = producers + [d for d in depthwise if d not in all_producers]
            groups.append(
                ChannelGroup(
                    name=producers[0],
                    channels=sp.channels,
                    producers=producers,
                    depthwise=depthwise,
                    consumers=list(dict.fromkeys(sp.consumers)),
                    slices=list(dict.fromkeys(sp.slices)),
                    reason="; ".join(sp.reasons) or None,
                    deciders=deciders,
                    depthwise_calls=sp.depthwise_calls,
                    reshape_calls=sp.reshape_calls,
                    tir_calls=sp.tir_calls,
                )
            )
        _reject_shared_params(groups)
        return sorted(groups, key=lambda g: self.layer_order[g.name])


def _reject_shared_params(groups: list[ChannelGroup]) -> None:
    """A parameter axis sliced by two groups (shared weights) cannot follow two decisions."""
    owner: dict[tuple[str, int], ChannelGroup] = {}
    for g in groups:
        for s in g.slices:
            other = owner.setdefault((s.param, s.axis), g)
            if other is not g:
                for x in (g, other):
                    why = f"parameter {s.param} is shared with another group"
                    x.reason = why if x.reason is None else f"{x.reason}; {why}"


def channel_groups(func: relax.Function, mod=None) -> list[ChannelGroup]:
    """The channel groups of a hanasc ``main`` (weights as named parameters), in graph order.

    ``mod`` (the IRModule holding ``func``) lets the analysis read ``call_tir`` PrimFuncs to recognise
    Clip's maximum/minimum; without it they are recognised by name.
    """
    return _Analyzer(func, mod).run()
