"""Kernel shrink: a KxK conv (standard or depthwise) -> its centre kxk, padding reduced to match.

Cropping the kernel to its centre and reducing the padding by ``(K - k) / 2`` per side gives exactly the
output of the original conv with the outer ring of the kernel zeroed (:func:`zero_outside_centre`, the
simulation weight): the same output shape, the same windows, the same sums.
"""

from __future__ import annotations

import numpy as np
from tvm import ir, relax
from tvm.ir import IRModule
from tvm.relax.dpl import rewrite_call

from hanasc.passes.call_rewrite import CallRewrite
from hanasc.passes.config import ConfigError
from hanasc.passes.separable import conv2d_like, describe_layer, weight_users
from hanasc.passes.weights import WeightEditor, weight_name_of


def _margins(w: np.ndarray, k: int) -> tuple[int, int]:
    kh, kw = w.shape[-2:]
    if k > min(kh, kw) or (kh - k) % 2 or (kw - k) % 2:
        raise ValueError(f"cannot take a centred {k}x{k} out of a {kh}x{kw} kernel")
    return (kh - k) // 2, (kw - k) // 2


def crop_kernel(w: np.ndarray, k: int) -> np.ndarray:
    """The centre ``k x k`` of the spatial (last two) axes of ``w``."""
    mh, mw = _margins(w, k)
    return np.ascontiguousarray(w[..., mh : mh + k, mw : mw + k])


def zero_outside_centre(w: np.ndarray, k: int) -> np.ndarray:
    """``w`` with everything outside the centre ``k x k`` set to zero (same shape: the simulation weight)."""
    mh, mw = _margins(w, k)
    out = np.zeros_like(w)
    out[..., mh : mh + k, mw : mw + k] = w[..., mh : mh + k, mw : mw + k]
    return out


def _kernel_weight(func: relax.Function, layer: str) -> str:
    """The weight parameter holding layer's KxK kernel: ``L.weight``, or ``L.dw.weight`` once separable."""
    params = {p.name for p in func.params}
    return f"{layer}.dw.weight" if f"{layer}.dw.weight" in params else f"{layer}.weight"


@relax.transform.function_pass(opt_level=0, name="hanasc.ShrinkKernel")
class ShrinkKernel(CallRewrite):
    """Crop each conv ``L`` with ``config.choice(L).kernel = k < K`` to its centre ``k x k``.

    Works on standard and depthwise convs, and on the depthwise half of a separable layer (``L.dw.weight``).
    Layers named in the config but absent from the function (e.g. removed by SkipBlocks) are left alone.
    """

    op = "relax.nn.conv2d"

    def transform_function(self, func: relax.Function, mod: IRModule, ctx) -> relax.Function:
        if not isinstance(func, relax.Function):
            return func
        wanted = {
            name: choice.kernel for name, choice in self.config.layers.items() if choice.kernel is not None
        }
        editor = WeightEditor(func)
        targets: dict[str, int] = {}  # weight name -> k
        for layer, k in wanted.items():
            name = _kernel_weight(func, layer)
            if name in editor.vars and self._check(func, editor, layer, name, k):
                targets[name] = k
        if not targets:
            return func
        margins = {name: (editor.value(name).shape[-1] - k) // 2 for name, k in targets.items()}
        new_vars = {name: editor.set(name, crop_kernel(editor.value(name), k)) for name, k in targets.items()}

        def rewriter(expr: relax.Call, matches) -> relax.Expr:
            name = weight_name_of(expr.args[1], func)  # the cropped weights are new vars: no re-match
            if name not in new_vars:
                return expr
            padding = [int(v) - margins[name] for v in expr.attrs.padding]
            return conv2d_like(expr, expr.args[0], new_vars[name], padding=padding)

        rewritten = rewrite_call(self.pattern, rewriter, func)
        return editor.finish(rewritten)

    @staticmethod
    def _check(func: relax.Function, editor: WeightEditor, layer: str, name: str, k: int) -> bool:
        """Whether ``layer`` needs cropping to ``k``; ConfigError when it cannot be."""
        kind, _ = describe_layer(func, layer) if name == f"{layer}.weight" else ("conv", None)
        if kind == "dense":
            raise ConfigError(f"layer '{layer}': kernel={k} needs a conv, not a dense layer")
        users = weight_users(func, name)
        calls = [c for c in users if isinstance(c.op, ir.Op) and c.op.name == "relax.nn.conv2d"]
        if not calls:
            raise ConfigError(f"layer '{layer}': kernel={k} needs a conv2d layer")
        attrs = calls[0].attrs
        kh, kw = editor.value(name).shape[-2:]
        if kh != kw:
            raise ConfigError(f"layer '{layer}': kernel={k} needs a square kernel, this one is {kh}x{kw}")
        if k == kh:
            return False
        if k > kh:
            raise ConfigError(f"layer '{layer}': kernel={k} is larger than the layer's {kh}x{kh} kernel")
        if k < 1 or k % 2 == 0 or kh % 2 == 0:
            raise ConfigError(f"layer '{layer}': kernel={k} must be odd, and so must the layer's ({kh})")
        if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
            raise ConfigError(f"layer '{layer}': kernel shrink supports NCHW/OIHW convs only")
        if any(int(d) != 1 for d in attrs.dilation):
            raise ConfigError(f"layer '{layer}': kernel shrink needs dilation 1, this conv is dilated")
        margin = (kh - k) // 2
        padding = [int(v) for v in attrs.padding]
        if min(padding) < margin:
            raise ConfigError(
                f"layer '{layer}': kernel {kh}x{kh} -> {k}x{k} needs padding >= {margin} per side, "
                f"the conv has padding {padding}"
            )
        return True
