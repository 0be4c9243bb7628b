"""Per-layer quantization: numpy reference functions and two Relax function passes.

Scheme (see docs/quantization.md):

- weights: symmetric, per output channel; ``qmax = 2**(bits-1) - 1`` (127 / 7 / 1),
  ``scale = max|w[c]| / qmax`` (1.0 for an all-zero channel), ``q = clip(round(w / scale), -qmax, qmax)``;
  rounding is half to even (numpy ``round``, TVM ``round``). 16 bits means float16.
- activations (a layer's data input): symmetric int8 per tensor, ``QMIN..QMAX = -127..127``,
  ``scale = max(|lo|, |hi|) / 127`` from a calibrated range; ``codes = clip(round(x * inverse_scale), ...)``
  with ``inverse_scale = float32(1) / float32(scale)`` (one multiply per element, no division).

:class:`QuantizeLayers` materializes a :class:`~hanasc.passes.config.Config` for real (int8 / packed 4- and
2-bit weights, int8 x int8 -> int32 convs and matmuls, float16 compute); :class:`FakeQuantizeLayers`
simulates the same choices in float32 inside the graph. Both find a layer as the ``conv2d`` or ``matmul``
whose weight argument (possibly through ``permute_dims``) is its named weight parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from hanasc.passes.config import ACT_BITS, WEIGHT_BITS, Config, ConfigError
from hanasc.passes.packing import PACKED_BITS, pack_bits, unpack_expr
from hanasc.passes.quant_reference import (
    QMAX,
    QMIN,
    _channel_shape,
    activation_scale,
    fake_quantize_weight,
    inverse_scale,
    quantize_weight,
)
from hanasc.passes.weights import WeightEditor, layer_of_weight, weight_name_of, weight_params, weight_values

SCALE_SUFFIX = ".scale"  # per-channel weight scales are stored as the parameter "<weight>.scale"


# ---------------------------------------------------------------------------------------------------------
# what each weight becomes


@dataclass(frozen=True)
class WeightPlan:
    """How one weight parameter's op is materialized.

    ``compute`` is the op's input dtype: ``int8`` (int8 x int8 -> int32), ``float16`` (fp16 inputs, fp32
    accumulation and output) or ``float32`` (weight-only: the weight is dequantized in the graph).
    ``a_bits`` is the effective activation choice for this op (32 for a separable layer's pointwise conv).
    """

    weight: str
    layer: str
    w_bits: int
    a_bits: int
    compute: str

    @property
    def stored_dtype(self) -> str:
        if self.w_bits in (8, *PACKED_BITS):
            return "int8" if self.w_bits == 8 else "uint8"
        return "float16"  # w_bits 16, or w_bits 32 computed in fp16


def plan_weight(weight: str, config: Config) -> WeightPlan | None:
    """The plan for one weight parameter under ``config``; None when it stays float32.

    A separable layer ``L`` has weights ``L.dw.weight`` and ``L.pw.weight``: ``a_bits`` applies to the
    depthwise conv (the layer's original input); the pointwise conv gets weight-only quantization (``w_bits``
    stored, dequantized to float32) at float activations.
    """
    layer = layer_of_weight(weight)
    if layer is None:
        return None
    choice = config.choice(layer)
    w_bits, a_bits = choice.w_bits, choice.a_bits
    if weight.endswith(".pw.weight"):
        return WeightPlan(weight, layer, w_bits, 32, "float32") if w_bits != 32 else None
    if w_bits == 32 and a_bits == 32:
        return None
    compute = "int8" if a_bits == 8 else "float16" if 16 in (w_bits, a_bits) else "float32"
    return WeightPlan(weight, layer, w_bits, a_bits, compute)


RangeTable = Mapping[str, tuple[float, float]]


def range_table(ranges) -> dict[str, tuple[float, float]]:
    """``ActivationRanges`` or a plain mapping layer -> (lo, hi), as a dict (None: empty)."""
    if ranges is None:
        return {}
    table = getattr(ranges, "ranges", ranges)
    return {name: (float(lo), float(hi)) for name, (lo, hi) in dict(table).items()}


def check_config(config: Config, weights: list[str], ranges: RangeTable) -> dict[str, WeightPlan]:
    """Validate ``config`` against a module's weight names and ranges; the plans of the weights to change."""
    layers = {layer_of_weight(name) for name in weights} - {None}
    for name, choice in config.layers.items():
        where = f"config: layer '{name}'"
        if name not in layers:
            raise ConfigError(f"{where}: no such layer in the model (no weight '{name}.weight')")
        if choice.w_bits not in WEIGHT_BITS:
            raise ConfigError(f"{where}: w_bits={choice.w_bits} not in {WEIGHT_BITS}")
        if choice.a_bits not in ACT_BITS:
            raise ConfigError(f"{where}: a_bits={choice.a_bits} not in {ACT_BITS}")
        if choice.a_bits == 8 and choice.w_bits > 8:
            raise ConfigError(f"{where}: a_bits=8 needs w_bits <= 8 (integer compute), got {choice.w_bits}")
        if choice.a_bits == 8 and name not in ranges:
            raise ConfigError(f"{where}: a_bits=8 needs a calibrated activation range (run calibration)")
    plans = {}
    for weight in weights:
        plan = plan_weight(weight, config)
        if plan is not None:
            plans[weight] = plan
    return plans


# ---------------------------------------------------------------------------------------------------------
# graph building blocks


@dataclass(frozen=True)
class _Site:
    """One matched op: ``conv2d(data, W)``, ``matmul(data, permute_dims(W))`` or ``matmul(data, W)``."""

    call: relax.Call
    weight: str
    kind: str  # "conv" | "dense"
    axis: int  # output-channel axis of the weight parameter
    permute: relax.Call | None  # the permute_dims between the weight and a matmul

    def op(self, data: relax.Expr, weight: relax.Expr, out_dtype: str) -> relax.Expr:
        if self.kind == "conv":
            a = self.call.attrs
            return relax.op.nn.conv2d(
                data,
                weight,
                strides=a.strides,
                padding=a.padding,
                dilation=a.dilation,
                groups=a.groups,
                data_layout=a.data_layout,
                kernel_layout=a.kernel_layout,
                out_layout=a.out_layout,
                out_dtype=out_dtype,
            )
        if self.permute is not None:
            weight = relax.op.permute_dims(weight, self.permute.attrs.axes)
        return relax.op.matmul(data, weight, out_dtype=out_dtype)

    def out_channel_shape(self, channels: int) -> list[int]:
        """Shape broadcasting a per-channel vector over the op's output (NCHW channels, or the last axis)."""
        if self.kind == "conv":
            ndim = len(self.call.ty.shape)
            return [1, channels] + [1] * (ndim - 2)
        return [channels]


def quantize_activation_expr(x: relax.Expr, scale: float, dtype: str = "int8") -> relax.Expr:
    """``clip(round(x * (1 / scale)), QMIN, QMAX)`` cast to ``dtype`` (float32 gives the codes as floats)."""
    inverse = relax.const(inverse_scale(scale), "float32")
    codes = relax.op.clip(relax.op.round(relax.op.multiply(x, inverse)), QMIN, QMAX)
    return codes if dtype == "float32" else relax.op.astype(codes, dtype)


def fake_quantize_activation_expr(x: relax.Expr, scale: float) -> relax.Expr:
    """In-graph :func:`fake_quantize_activation`."""
    return relax.op.multiply(quantize_activation_expr(x, scale, "float32"), relax.const(scale, "float32"))


def _round_fp16_expr(x: relax.Expr) -> relax.Expr:
    return relax.op.astype(relax.op.astype(x, "float16"), "float32")


class _LayerRewriter:
    """Matching shared by both passes: finds conv2d/matmul sites whose weight is a planned parameter."""

    def __init__(self, config: Config, ranges=None) -> None:
        self.config = config
        self.ranges = range_table(ranges)
        self.pattern = is_op("relax.nn.conv2d")(wildcard(), wildcard()) | is_op("relax.matmul")(
            wildcard(), wildcard()
        )

    def transform_function(self, func: relax.Function, mod, ctx) -> relax.Function:
        if not func.attrs or "params" not in func.attrs or "num_input" not in func.attrs:
            return func  # not a hanasc main(inputs..., weights...)
        if func.attrs.get("Primitive", 0):
            return func
        params = weight_params(func)
        plans = check_config(self.config, list(params), self.ranges)
        plans = {n: p for n, p in plans.items() if str(params[n].ty.dtype) == "float32"}  # skip done ones
        if not plans:
            return func
        editor = WeightEditor(func)
        bindings = relax.analysis.get_var2val(func)
        done: set[str] = set()

        def rewriter(expr: relax.Expr, matches) -> relax.Expr:
            site = _find_site(expr, func, bindings)
            if site is None or site.weight not in plans or site.weight in done:
                return expr
            done.add(site.weight)
            return self.rewrite(site, plans[site.weight], editor)

        rewritten = rewrite_call(self.pattern, rewriter, func)
        missing = sorted(set(plans) - done)
        if missing:
            raise ConfigError(
                f"config: layer '{plans[missing[0]].layer}': weight '{missing[0]}' is not the weight of a "
                "conv2d or matmul, so it cannot be quantized"
            )
        return relax.analysis.remove_all_unused(editor.finish(rewritten))

    def act_scale(self, plan: WeightPlan) -> float:
        return activation_scale(*self.ranges[plan.layer])

    def rewrite(self, site: _Site, plan: WeightPlan, editor: WeightEditor) -> relax.Expr:
        raise NotImplementedError


def _find_site(expr: relax.Expr, func: relax.Function, bindings) -> _Site | None:
    if not isinstance(expr, relax.Call) or len(expr.args) != 2:
        return None
    arg = expr.args[1]
    if expr.op.name == "relax.nn.conv2d":
        name = weight_name_of(arg, func)
        if name is None:
            return None
        a = expr.attrs
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW":
            raise ConfigError(f"weight '{name}': conv2d layouts must be NCHW/OIHW to quantize")
        return _Site(expr, name, "conv", 0, None)
    name = weight_name_of(arg, func)
    if name is not None:
        return _Site(expr, name, "dense", len(arg.ty.shape) - 1, None)
    permute = bindings.get(arg) if isinstance(arg, relax.Var) else arg
    if isinstance(permute, relax.Call) and permute.op.name == "relax.permute_dims":
        name = weight_name_of(permute.args[0], func)
        axes = permute.attrs.axes
        if name is not None and len(permute.args[0].ty.shape) == 2 and (axes is None or list(axes) == [1, 0]):
            return _Site(expr, name, "dense", 0, permute)
    return None


# ---------------------------------------------------------------------------------------------------------
# the passes


@relax.transform.function_pass(opt_level=0, name="hanasc.QuantizeLayers")
class QuantizeLayers(_LayerRewriter):
    """Materialize the bit-width choices of ``config`` with real low-precision weights and ops.

    Per layer (``w_bits``, ``a_bits``):

    - ``a_bits=8``: the input is quantized to int8 with the calibrated scale ``s_x``; the conv/matmul runs
      int8 x int8 -> int32 and the result is scaled to float32 by ``s_x * scale_w[c]``; the bias stays float.
    - ``w_bits`` 8/4/2 with float activations: weight-only; int8 (8) or packed uint8 (4, 2) codes are stored
      with float32 scales (parameter ``<weight>.scale``) and dequantized in the graph before a float32 op.
    - ``w_bits=16`` or ``a_bits=16``: the weight is stored as float16, the input is cast to float16, and the
      op takes fp16 inputs with a float32 output (fp32 accumulation).

    4- and 2-bit weights are unpacked to int8 in the graph (:mod:`hanasc.passes.packing`). Weights that
    are no longer float32 are skipped, so running the pass twice changes nothing more.
    """

    def __init__(self, config: Config, ranges=None) -> None:
        super().__init__(config, ranges)

    def rewrite(self, site: _Site, plan: WeightPlan, editor: WeightEditor) -> relax.Expr:
        w = editor.value(site.weight)
        name = site.weight
        if plan.w_bits in (8, *PACKED_BITS):
            q, scale = quantize_weight(w, plan.w_bits, site.axis)
            stored = q if plan.w_bits == 8 else pack_bits(q, plan.w_bits)
            codes = editor.set(name, stored)
            if plan.w_bits != 8:
                codes = unpack_expr(codes, plan.w_bits, tuple(w.shape))
            scale_var = editor.add(name + SCALE_SUFFIX, scale, after=name)
            if plan.compute == "int8":
                x = quantize_activation_expr(site.call.args[0], self.act_scale(plan))
                acc = site.op(x, codes, "int32")
                multiplier = relax.op.multiply(scale_var, relax.const(self.act_scale(plan), "float32"))
                multiplier = relax.op.reshape(multiplier, site.out_channel_shape(len(scale)))
                return relax.op.multiply(relax.op.astype(acc, "float32"), multiplier)
            weight = relax.op.multiply(
                relax.op.astype(codes, "float32"),
                relax.op.reshape(scale_var, _channel_shape(w.ndim, site.axis)),
            )
            weight_dtype = "float32"
        else:  # float16 storage: w_bits 16, or w_bits 32 computed in fp16
            weight, weight_dtype = editor.set(name, w.astype(np.float16)), "float16"
        if plan.compute == "float16":
            if weight_dtype != "float16":
                weight = relax.op.astype(weight, "float16")
            return site.op(relax.op.astype(site.call.args[0], "float16"), weight, "float32")
        if weight_dtype != "float32":
            weight = relax.op.astype(weight, "float32")
        return site.op(site.call.args[0], weight, "float32")


@relax.transform.function_pass(opt_level=0, name="hanasc.FakeQuantizeLayers")
class FakeQuantizeLayers(_LayerRewriter):
    """Simulate the choices of ``config`` in float32: the reference for :class:`QuantizeLayers`.

    Weights are replaced by :func:`fake_quantize_weight` values (also rounded through float16 when the op
    computes in fp16); an int8 input becomes ``clip(round(x / s), QMIN, QMAX) * s`` and an fp16 input
    ``astype(astype(x, float16), float32)``.
    """

    def __init__(self, config: Config, ranges=None) -> None:
        super().__init__(config, ranges)

    def rewrite(self, site: _Site, plan: WeightPlan, editor: WeightEditor) -> relax.Expr:
        w = fake_quantize_weight(editor.value(site.weight), plan.w_bits, site.axis)
        if plan.compute == "float16":
            w = w.astype(np.float16).astype(np.float32)
        editor.set(site.weight, w)
        data = site.call.args[0]
        if plan.compute == "int8":
            data = fake_quantize_activation_expr(data, self.act_scale(plan))
        elif plan.compute == "float16":
            data = _round_fp16_expr(data)
        else:
            return site.call
        return relax.Call(site.call.op, [data, site.call.args[1]], site.call.attrs)


def parameter_bytes(func: relax.Function) -> int:
    """Bytes of all weight parameters of a hanasc ``main`` (codes, packed bytes, scales and biases)."""
    return sum(v.nbytes for v in weight_values(func).values())
