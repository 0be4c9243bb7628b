"""Depthwise-separable substitution: a KxK conv (groups=1) -> depthwise KxK + pointwise 1x1.

The weights come from the best rank-1 factorisation (SVD) of each input channel's slice of the kernel:
``W[o, i] ~ pw[o, i] * dw[i]``. :func:`reconstruct_separable` gives the full KxK weight that the
simulator puts into the original graph; a conv with it equals the materialized depthwise + pointwise pair.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.dpl import rewrite_call

from hanasc.passes.call_rewrite import CallRewrite
from hanasc.passes.config import Config, ConfigError
from hanasc.passes.weights import WeightEditor, layer_of_weight, weight_name_of, weight_values


def decompose_separable(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Split ``w`` (Cout, Cin, Kh, Kw) into ``dw`` (Cin, 1, Kh, Kw), ``pw`` (Cout, Cin, 1, 1) and the
    relative Frobenius error ``||W - W'|| / ||W||`` of the reconstruction ``W'``."""
    if w.ndim != 4:
        raise ValueError(f"expected a 4-D OIHW conv weight, got shape {w.shape}")
    cout, cin, kh, kw = w.shape
    slices = np.transpose(w.astype(np.float64), (1, 0, 2, 3)).reshape(cin, cout, kh * kw)
    u, s, vt = np.linalg.svd(slices, full_matrices=False)  # batched over input channels
    root = np.sqrt(s[:, 0])
    pw_cols = u[:, :, 0] * root[:, None]  # (Cin, Cout)
    dw_rows = vt[:, 0, :] * root[:, None]  # (Cin, Kh*Kw)
    flip = np.where(dw_rows.sum(axis=1) < 0, -1.0, 1.0)[:, None]  # deterministic signs
    pw_cols, dw_rows = pw_cols * flip, dw_rows * flip
    dw = dw_rows.reshape(cin, 1, kh, kw)
    pw = pw_cols.T.reshape(cout, cin, 1, 1)
    norm = np.linalg.norm(w.astype(np.float64))
    error = float(np.linalg.norm(w - reconstruct_separable(dw, pw)) / norm) if norm > 0 else 0.0
    return dw.astype(w.dtype), pw.astype(w.dtype), error


def reconstruct_separable(dw: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """The full (Cout, Cin, Kh, Kw) weight equal to depthwise ``dw`` followed by pointwise ``pw``."""
    return np.einsum("oi,ihw->oihw", pw[:, :, 0, 0], dw[:, 0]).astype(np.result_type(dw, pw))


def simulate_separable(w: np.ndarray) -> np.ndarray:
    """The simulation weight of a separable substitution: ``w`` replaced by its separable approximation."""
    dw, pw, _ = decompose_separable(w)
    return reconstruct_separable(dw, pw)


def separable_errors(source: IRModule | dict[str, np.ndarray], layers: Iterable[str]) -> dict[str, float]:
    """The relative approximation error of the separable substitution, per layer name."""
    weights = weight_values(source["main"]) if isinstance(source, IRModule) else source
    errors = {}
    for layer in layers:
        w = weights.get(f"{layer}.weight")
        if w is None or w.ndim != 4 or w.shape[2] * w.shape[3] == 1:
            raise ConfigError(f"layer '{layer}': no KxK conv weight '{layer}.weight' to make separable")
        errors[layer] = decompose_separable(w)[2]
    return errors


def kernel_to_decompose(w: np.ndarray, config: Config, layer: str) -> np.ndarray:
    """The kernel the layer will finally have: zero outside the centre when the config also shrinks it.

    Decomposing that kernel makes SeparableConv and ShrinkKernel commute (ShrinkKernel then only crops
    the zero ring of ``L.dw.weight``), and the simulation weight of a layer with both choices is
    ``simulate_separable(zero_outside_centre(w, k))``.
    """
    k, size = config.choice(layer).kernel, w.shape[-1]
    if k is None or not 0 < k < size or (size - k) % 2 or w.shape[-2] != size:
        return w  # no shrink, or one that ShrinkKernel will reject
    margin = (size - k) // 2
    out = np.zeros_like(w)
    out[..., margin : margin + k, margin : margin + k] = w[..., margin : margin + k, margin : margin + k]
    return out


def conv2d_like(call: relax.Call, data: relax.Expr, weight: relax.Expr, **changes) -> relax.Expr:
    """A conv2d with the attributes of ``call`` (strides, padding, ...), some of them changed."""
    attrs = call.attrs
    out_dtype = attrs.out_dtype
    args = {
        "strides": [int(v) for v in attrs.strides],
        "padding": [int(v) for v in attrs.padding],
        "dilation": [int(v) for v in attrs.dilation],
        "groups": int(attrs.groups),
        "data_layout": str(attrs.data_layout),
        "kernel_layout": str(attrs.kernel_layout),
        "out_layout": str(attrs.out_layout),
        "out_dtype": None if out_dtype is None or str(out_dtype) in ("", "void") else str(out_dtype),
    }
    args.update(changes)
    return relax.op.nn.conv2d(data, weight, **args)


def weight_users(func: relax.Function, name: str) -> list[relax.Call]:
    """The calls in ``func`` that take the weight parameter ``name`` as an argument."""
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and any(weight_name_of(arg, func) == name for arg in expr.args):
            found.append(expr)

    relax.analysis.post_order_visit(func.body, visit)
    return found


def describe_layer(func: relax.Function, layer: str) -> tuple[str, relax.Call | None]:
    """What ``layer.weight`` feeds: ("conv", call), ("dense", call), ("other", call) or ("absent", None)."""
    users = weight_users(func, f"{layer}.weight")
    if not users:
        return "absent", None
    call = users[0]
    op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    if op == "relax.nn.conv2d":
        return "conv", call
    if op in ("relax.matmul", "relax.permute_dims", "relax.linear"):
        return "dense", call
    return "other", call


@relax.transform.function_pass(opt_level=0, name="hanasc.SeparableConv")
class SeparableConv(CallRewrite):
    """Replace each conv ``L`` with ``config.choice(L).separable`` by depthwise ``L.dw.weight`` (KxK,
    groups=Cin, same strides/padding/dilation) then pointwise ``L.pw.weight`` (1x1); ``L.weight`` goes.

    Layers named in the config but absent from the function (e.g. removed by SkipBlocks) are left alone.
    """

    op = "relax.nn.conv2d"

    def transform_function(self, func: relax.Function, mod: IRModule, ctx) -> relax.Function:
        wanted = [name for name, choice in self.config.layers.items() if choice.separable]
        if not isinstance(func, relax.Function) or not wanted:
            return func
        editor = WeightEditor(func)
        for layer in wanted:
            self._check(func, editor, layer)

        def rewriter(expr: relax.Call, matches) -> relax.Expr:
            name = weight_name_of(expr.args[1], func)
            layer = layer_of_weight(name) if name else None
            if layer is None or name != f"{layer}.weight" or layer not in wanted:
                return expr
            if f"{layer}.dw.weight" not in editor.vars:  # the rewriter may see a call more than once
                dw, pw, _ = decompose_separable(kernel_to_decompose(editor.value(name), self.config, layer))
                editor.add(f"{layer}.dw.weight", dw, after=name)
                editor.add(f"{layer}.pw.weight", pw, after=f"{layer}.dw.weight")
                editor.remove(name)
            dw_var, pw_var = editor.var(f"{layer}.dw.weight"), editor.var(f"{layer}.pw.weight")
            groups = int(dw_var.ty.shape[0])
            depthwise = conv2d_like(expr, expr.args[0], dw_var, groups=groups)
            return conv2d_like(expr, depthwise, pw_var, strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1])

        rewritten = rewrite_call(self.pattern, rewriter, func)
        return editor.finish(rewritten)

    @staticmethod
    def _check(func: relax.Function, editor: WeightEditor, layer: str) -> None:
        kind, call = describe_layer(func, layer)
        if kind == "absent":
            return
        if kind == "dense":
            raise ConfigError(f"layer '{layer}': separable substitution needs a KxK conv, not a dense layer")
        if kind != "conv":
            raise ConfigError(f"layer '{layer}': separable substitution needs a conv2d layer")
        w = editor.value(f"{layer}.weight")
        if int(call.attrs.groups) != 1:
            raise ConfigError(
                f"layer '{layer}': separable substitution needs a standard conv (groups=1), "
                f"this is a depthwise/grouped conv (groups={int(call.attrs.groups)})"
            )
        if str(call.attrs.data_layout) != "NCHW" or str(call.attrs.kernel_layout) != "OIHW":
            raise ConfigError(f"layer '{layer}': separable substitution supports NCHW/OIHW convs only")
        if w.shape[2] * w.shape[3] == 1:
            raise ConfigError(f"layer '{layer}': a 1x1 conv cannot be made separable (needs a KxK kernel)")
