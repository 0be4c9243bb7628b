"""Kernels to profile: every layer choice a model's search space can produce, plus random shapes.

Each item is a small Relax module (conv / depthwise / dense + bias + clip, in fp32, int8 or fp16, the way
the quantize pass lowers them: int8 x int8 -> int32, then dequantize); lowering it with the target's fusion
passes gives the fused kernel the target would run for that choice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from hanasc.core.kernel_shape import KernelShape

DTYPES = ("float32", "int8", "float16")
WIDTHS = (1.0, 0.75, 0.5, 0.25)


@dataclass(unsafe_hash=True)
class LayerShape(KernelShape):
    """One conv or dense layer to profile (the fields of :class:`KernelShape`). Hashable, and treated as a
    value: it keys the sweep's tables, so it is never changed in place (``dataclasses.replace`` makes
    another); a dataclass cannot be frozen over the kinds' mutable :class:`KernelShape`."""

    def label(self) -> str:
        if self.dense:
            return f"dense {self.cin}->{self.cout} {self.dtype}"
        kind = "dw" if self.groups == self.cin and self.groups > 1 else "conv"
        return (
            f"{kind}{self.kernel}x{self.kernel}/s{self.stride} {self.cin}->{self.cout} @{self.h} {self.dtype}"
        )


def layer_module(layer: LayerShape, int8_weight_param: bool = False):
    """A Relax module ``main(x) = clip(op(x, W) + b)``, constant weights of the layer's shape and dtype.

    ``int8_weight_param``: an int8 ``W`` is a weight parameter (``main(x, W)``, its value in the ``params``
    attribute) as in a materialized model, so the shipped lowering binds it late and picks the same int8
    kernels (pair / quad dot products) it does in the network."""
    import numpy as np
    from tvm import relax

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    act_dtype = {"int8": "int8", "float16": "float16"}.get(layer.dtype, "float32")
    in_shape = (1, layer.cin) if layer.dense else (1, layer.cin, layer.h, layer.w)
    x = relax.Var("x", relax.TensorType(in_shape, act_dtype))
    if layer.dense:
        w_shape: tuple[int, ...] = (layer.cout, layer.cin)
    else:
        w_shape = (layer.cout, layer.cin // layer.groups, layer.kernel, layer.kernel)
    if act_dtype == "int8":
        weight = rng.integers(-127, 128, size=w_shape).astype("int8")
    else:
        weight = (rng.standard_normal(w_shape) * 0.1).astype(act_dtype)
    as_param = int8_weight_param and act_dtype == "int8"
    w_var = relax.Var("w", relax.TensorType(w_shape, "int8")) if as_param else None
    attrs = {"num_input": 1} if as_param else None
    with bb.function("main", [x, w_var] if as_param else [x], attrs=attrs):
        with bb.dataflow():
            out_dtype = "int32" if act_dtype == "int8" else act_dtype
            w = w_var if as_param else relax.const(weight)
            if layer.dense:
                y = bb.emit(relax.op.matmul(x, relax.op.permute_dims(w), out_dtype=out_dtype))
                b_shape: tuple[int, ...] = (1, layer.cout)
            else:
                pad = layer.kernel // 2
                y = bb.emit(
                    relax.op.nn.conv2d(
                        x, w, strides=layer.stride, padding=pad, groups=layer.groups, out_dtype=out_dtype
                    )
                )
                b_shape = (1, layer.cout, 1, 1)
            if act_dtype == "int8":
                y = bb.emit(relax.op.multiply(relax.op.astype(y, "float32"), relax.const(0.01, "float32")))
            fdtype = "float16" if act_dtype == "float16" else "float32"
            y = bb.emit(relax.op.add(y, relax.const(rng.standard_normal(b_shape).astype(fdtype))))
            y = bb.emit(relax.op.clip(y, 0.0, 6.0))
            if act_dtype == "int8":
                y = bb.emit(relax.op.astype(relax.op.round(relax.op.multiply(y, relax.const(20.0))), "int8"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    if as_param:
        import tvm

        mod["main"] = mod["main"].with_attr("params", [tvm.runtime.tensor(weight)])
    return mod


def search_space_layers(layers, dtypes: tuple[str, ...] = DTYPES) -> list[LayerShape]:
    """Every distinct layer shape the search space can produce from a model's layer table.

    Per layer (``hanasc.core.layers.LayerInfo``): output width 1.0/0.75/0.5/0.25 (input width following
    the previous layer's choice, approximated by the same ratio and by 1.0), kernel 3 or 5 (at most the
    original), the separable replacement of a KxK conv (depthwise KxK + pointwise 1x1), each dtype.
    """
    out: dict[LayerShape, None] = {}
    for layer in layers:
        dense = layer.op == "dense"
        cin = layer.in_shape[1]
        cout = layer.out_shape[1]
        h, w = (1, 1) if dense else (layer.in_shape[2], layer.in_shape[3])
        k0 = layer.kernel[0] if layer.kernel else 1
        stride = layer.stride[0] if layer.stride else 1
        depthwise = layer.op == "depthwise_conv"
        kernels = sorted({k for k in (k0, 3, 5) if k <= k0}) if k0 > 1 else [1]
        for width in WIDTHS:
            for in_width in {1.0, width}:
                ci = max(1, round(cin * in_width)) if layer.in_shape[1] > 3 else cin
                co = ci if depthwise else max(1, round(cout * width))
                for k in kernels:
                    for dtype in dtypes:
                        if dense:
                            out[LayerShape(ci, co, 1, 1, dense=True, dtype=dtype)] = None
                        elif depthwise:
                            out[LayerShape(ci, ci, h, w, k, stride, groups=ci, dtype=dtype)] = None
                        else:
                            out[LayerShape(ci, co, h, w, k, stride, dtype=dtype)] = None
                            if k > 1 and layer.groups == 1:  # separable: depthwise KxK + pointwise
                                out[LayerShape(ci, ci, h, w, k, stride, groups=ci, dtype=dtype)] = None
                                ho, wo = -(-h // stride), -(-w // stride)
                                out[LayerShape(ci, co, ho, wo, 1, 1, dtype=dtype)] = None
    return list(out)


def random_layers(n: int, seed: int = 0, dtypes: tuple[str, ...] = DTYPES) -> list[LayerShape]:
    """Random conv / depthwise / dense shapes in the range of mobile CNNs."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.choice(["conv", "conv1x1", "dw", "dense"])
        dtype = rng.choice(dtypes)
        c = rng.choice([8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 144, 192, 240, 320, 480, 672])
        hw = rng.choice([7, 14, 28, 56, 112])
        stride = rng.choice([1, 1, 2])
        if kind == "dense":
            out.append(
                LayerShape(
                    c * rng.choice([1, 2, 4]), rng.choice([10, 100, 1000]), 1, 1, dense=True, dtype=dtype
                )
            )
        elif kind == "dw":
            out.append(LayerShape(c, c, hw, hw, rng.choice([3, 5]), stride, groups=c, dtype=dtype))
        elif kind == "conv1x1":
            out.append(
                LayerShape(c, rng.choice([8, 16, 24, 32, 40, 80, 112, 192, 320, 1280]), hw, hw, dtype=dtype)
            )
        else:
            out.append(
                LayerShape(rng.choice([3, 8, 16, 32]), c, hw, hw, rng.choice([3, 5]), stride, dtype=dtype)
            )
    return out


def interleave(*lists: list[LayerShape], seed: int = 0) -> Iterator[LayerShape]:
    """Shuffle each list, then alternate between them, so a short budget still covers every kind."""
    rng = random.Random(seed)
    shuffled = [rng.sample(lst, len(lst)) for lst in lists]
    for i in range(max((len(s) for s in shuffled), default=0)):
        for s in shuffled:
            if i < len(s):
                yield s[i]
