"""Quantization arithmetic in numpy: the reference the compile-once simulator, the recovery and the torch
form compute with, and that the Relax passes (:mod:`hanasc.passes.quantize`) reproduce in the graph.
The scheme is described in :mod:`hanasc.passes.quantize` and docs/quantization.md."""

from __future__ import annotations

import numpy as np

from hanasc.passes.packing import PACKED_BITS
from hanasc.passes.weight_clipping import SEARCHED_BITS, mse_scales

QMIN, QMAX = -127, 127  # int8 activations: symmetric restricted range (zero maps to 0, -128 unused)


def weight_qmax(bits: int) -> int:
    """Largest integer code of a symmetric ``bits``-bit weight (127, 7, 1)."""
    if bits not in (8, *PACKED_BITS):
        raise ValueError(f"integer weights are 8, 4 or 2 bits, not {bits}")
    return 2 ** (bits - 1) - 1


def _channel_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def quantize_weight(w: np.ndarray, bits: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel quantization of ``w`` along ``axis`` (the output channels).

    Returns ``(q, scale)``: int8 codes in ``[-qmax, qmax]`` and float32 scales of length ``w.shape[axis]``.
    8 bits use the max-abs scale; 4 and 2 bits the per-channel clipping of least squared error
    (:mod:`hanasc.passes.weight_clipping`).
    """
    qmax = weight_qmax(bits)
    w = np.asarray(w, np.float32)
    axis = axis % w.ndim
    others = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=others) if others else np.abs(w)
    if bits in SEARCHED_BITS:  # 4/2 bits: the clipping of least error per channel
        scale = mse_scales(w, amax, qmax, axis)
    else:
        scale = (amax / np.float32(qmax)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(_channel_shape(w.ndim, axis))), -qmax, qmax)
    return q.astype(np.int8), scale


def dequantize_weight(q: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    """``q * scale`` per channel, in float32 (what the graph computes for weight-only quantization)."""
    return q.astype(np.float32) * scale.astype(np.float32).reshape(_channel_shape(q.ndim, axis % q.ndim))


def fake_quantize_weight(w: np.ndarray, bits: int, axis: int = 0) -> np.ndarray:
    """``w`` as the ``bits``-bit choice represents it, in float32.

    32: unchanged; 16: rounded through float16; 8/4/2: ``dequantize_weight(*quantize_weight(w, bits))``.
    """
    w = np.asarray(w, np.float32)
    if bits == 32:
        return w.copy()
    if bits == 16:
        return w.astype(np.float16).astype(np.float32)
    q, scale = quantize_weight(w, bits, axis)
    return dequantize_weight(q, scale, axis)


def activation_scale(lo: float, hi: float) -> float:
    """Per-tensor int8 scale of a calibrated range: ``max(|lo|, |hi|) / QMAX`` (1.0 for an all-zero range)."""
    amax = max(abs(float(lo)), abs(float(hi)))
    if not np.isfinite(amax):
        raise ValueError(f"activation range ({lo}, {hi}) is not finite")
    return float(np.float32(amax / QMAX)) if amax > 0 else 1.0


def inverse_scale(scale: float) -> np.float32:
    """``1 / scale`` rounded once to float32: activations are quantized by multiplying with it (a division
    per element cost the int8 epilogues 0.3 ms on EfficientNet-Lite0); the passes, the simulator
    (``Reciprocal`` in float32) and numpy all use this same number."""
    return np.float32(1.0) / np.float32(scale)


def fake_quantize_activation(x: np.ndarray, scale: float) -> np.ndarray:
    """``clip(round(x * (1 / scale)), QMIN, QMAX) * scale`` in float32 (round half to even)."""
    s = np.float32(scale)
    codes = np.clip(np.round(np.asarray(x, np.float32) * inverse_scale(s)), QMIN, QMAX)
    return (codes * s).astype(np.float32)


def weight_channel_axes(onnx_model) -> dict[str, int]:
    """Output-channel axis of each searchable layer's weight initializer in a cleaned ONNX model.

    Conv weights (OIHW) and ``Gemm(transB=1)`` weights (N, K) use axis 0; ``MatMul`` and ``Gemm(transB=0)``
    weights (K, N) use their last axis. Pass these to :func:`quantize_weight` / :func:`fake_quantize_weight`.
    """
    import onnx

    dims = {init.name: len(init.dims) for init in onnx_model.graph.initializer}
    axes: dict[str, int] = {}
    for node in onnx_model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in dims:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        transposed = node.op_type == "Conv" or (node.op_type == "Gemm" and attrs.get("transB", 0))
        axes[node.input[1]] = 0 if transposed else dims[node.input[1]] - 1
    return axes
