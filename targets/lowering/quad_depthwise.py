"""int8 depthwise convolutions as byte dot products: four taps of a kernel row summed by one instruction.

An int8 depthwise conv has one input channel per output channel, so the dot-product instructions that
sum four input channels (``vpdpbusd``) have nothing to sum along channels; widened to int32, each tap is a
load, a widening and a multiply-add per 16 outputs, slower than the same conv in fp32. Here the four bytes
an int32 lane sums are four *taps* of one kernel row instead: in the blocked layout (``NCHW16c``) the
pixels ``x .. x+3`` of a row are 64 consecutive bytes, which one byte permutation (``vpermb``,
AVX512-VBMI; ``vpermd`` + ``vpshufb`` without it) turns into 16 channels x 4 taps, the layout of a weight
row stored as ``(C/16, Kh, G, 16, 4)`` (taps padded with zero weights to ``4 * G``). A 3x3 conv is then
three loads, three permutations and three ``vpdpbusd`` per 16 outputs
(:func:`hanasc.targets.x86_int8.register_depthwise`), against nine multiply-adds in fp32.

The unsigned operand is the activation: codes that cannot be negative (a ReLU's output,
:func:`hanasc.targets.lowering.dot_convs.nonnegative`) are read as they are (``uint8``); signed codes are
shifted by
128 as the input is padded (the border reads 128, i.e. code 0) and the constant ``128 * sum(w)`` per
channel (:func:`quad_offset`) is subtracted from the sums. Exact in int32 either way. The weight and the
offset are graph ops on the weight, computed once in numpy when it is bound
(:func:`quad_weight_values`, :func:`quad_offset_values`, :mod:`hanasc.targets.late_binding`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from hanasc.targets.lowering.conv_compute import DOT_CROP, dot_conv_width, window_extent

QUAD_DEPTHWISE = "depthwise_conv2d_nchwc_quads"  # the block cpu_schedules tensorizes with vpermb + vpdpbusd
QUAD_WEIGHT = "depthwise_quad_weight"  # OIHW int8 -> (C/b, Kh, G, b, 4), computed once when bound
QUAD_OFFSET = "depthwise_quad_offset"  # 128 * sum(w) per channel, computed once when bound
QUAD_UNSHIFT = "depthwise_quad_unshift"  # the offset subtracted from the sums of shifted codes
QUAD_BLOCK = 16  # channels per block: 16 x 4 bytes fill one 512-bit register
TAPS = 4  # taps of a kernel row per int32 lane
SHIFT = 128  # signed codes + 128 are unsigned codes


def tap_groups(kernel_width: int) -> int:
    """Groups of :data:`TAPS` taps covering a kernel row."""
    return -(-kernel_width // TAPS)


def quad_weight_values(weight: np.ndarray, block: int = QUAD_BLOCK) -> np.ndarray:
    """OIHW ``(C, 1, Kh, Kw)`` int8 -> ``(C/b, Kh, G, b, 4)``: each kernel row's taps in groups of four, the
    last group padded with zero weights, the ``b`` channels of a block outside the taps."""
    channels, _, kh, kw = weight.shape
    groups = tap_groups(kw)
    padded = np.zeros((channels, kh, groups * TAPS), np.int8)
    padded[:, :, :kw] = weight[:, 0]
    tiles = padded.reshape(channels // block, block, kh, groups, TAPS)
    return np.ascontiguousarray(tiles.transpose(0, 2, 3, 1, 4))


def quad_offset_values(weight: np.ndarray, block: int = QUAD_BLOCK) -> np.ndarray:
    """``SHIFT * sum(w)`` per channel of an OIHW depthwise weight, as ``(C/b, b)`` int32."""
    sums = weight.astype(np.int64).reshape(weight.shape[0], -1).sum(axis=1) * SHIFT
    return sums.astype(np.int32).reshape(-1, block)


def quad_weight(weight: te.Tensor, block: int = QUAD_BLOCK) -> te.Tensor:
    """:func:`quad_weight_values` as a TE compute (a graph op on the weight)."""
    channels, _, kh, kw = (int(d) for d in weight.shape)
    zero = tvm.tirx.const(0, weight.dtype)

    def value(c, y, g, j, t):
        tap = g * TAPS + t
        return tvm.tirx.if_then_else(tap < kw, weight[c * block + j, 0, y, tvm.te.min(tap, kw - 1)], zero)

    return te.compute((channels // block, kh, tap_groups(kw), block, TAPS), value, name=QUAD_WEIGHT)


def quad_offset(weight: te.Tensor, block: int = QUAD_BLOCK) -> te.Tensor:
    """:func:`quad_offset_values` as a TE compute (a graph op on the weight)."""
    channels, _, kh, kw = (int(d) for d in weight.shape)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (channels // block, block),
        lambda c, j: te.sum(weight[c * block + j, 0, ry, rx].astype("int32") * SHIFT, axis=[ry, rx]),
        name=QUAD_OFFSET,
    )


def quad_depthwise_conv2d(
    data: te.Tensor, weight: te.Tensor, strides, padding, kernel_width: int, offset: te.Tensor | None = None
) -> te.Tensor:
    """``(N, C/b, H, W, b)`` uint8 (or int8 with ``offset``) x ``(C/b, Kh, G, b, 4)`` int8 ->
    ``(N, C/b, OH, OW, b)`` int32, a depthwise conv of ``kernel_width`` taps a row (dilation 1).

    The input is padded in a separate stage: the conv's ``padding`` (top, left, bottom, right), plus the
    columns the last group of four taps and the last, whole tile of pixels read
    (:func:`hanasc.targets.lowering.conv_compute.dot_conv_width`; their weights are zero, the extra outputs
    cut
    off). int8 data is shifted to uint8 there (``x + 128``, the border 128) and ``offset``
    (:func:`quad_offset`) subtracted from the sums."""
    n, c_blocks, height, width, block = (int(d) for d in data.shape)
    _, kh, groups, _, _ = (int(d) for d in weight.shape)
    top, left, bottom, right = (int(p) for p in padding)
    sh, sw = (int(s) for s in strides)
    out_h = window_extent(height, top + bottom, kh, sh, 1)
    out_w = window_extent(width, left + right, kernel_width, sw, 1)
    wide = dot_conv_width(out_w)
    padded_w = max(left + width + right, (wide - 1) * sw + groups * TAPS)
    signed = str(data.dtype) == "int8"
    if signed and offset is None:
        raise ValueError("a depthwise conv on signed codes needs its offset")
    fill = tvm.tirx.const(SHIFT if signed else 0, "uint8")
    flip = tvm.tirx.const(SHIFT, "uint8")

    def code(i, c, y, x, j):
        value = data[i, c, y - top, x - left, j].astype("uint8")
        return value ^ flip if signed else value

    def padded_value(i, c, y, x, j):
        inside = tvm.tirx.all(y >= top, y < top + height, x >= left, x < left + width)
        return tvm.tirx.if_then_else(inside, code(i, c, y, x, j), fill)

    padded = te.compute((n, c_blocks, top + height + bottom, padded_w, block), padded_value, name="pad")
    ry = te.reduce_axis((0, kh), "ry")
    rxo, rxi = te.reduce_axis((0, groups), "rxo"), te.reduce_axis((0, TAPS), "rxi")
    conv = te.compute(
        (n, c_blocks, out_h, wide, block),
        lambda i, c, y, x, j: te.sum(
            padded[i, c, y * sh + ry, x * sw + rxo * TAPS + rxi, j].astype("int32")
            * weight[c, ry, rxo, j, rxi].astype("int32"),
            axis=[ry, rxo, rxi],
        ),
        name=QUAD_DEPTHWISE,
    )
    if signed:
        sums = conv
        conv = te.compute(
            sums.shape, lambda i, c, y, x, j: sums[i, c, y, x, j] - offset[c, j], name=QUAD_UNSHIFT
        )
    if wide == out_w:
        return conv
    return te.compute((n, c_blocks, out_h, out_w, block), lambda *i: conv(*i), name=DOT_CROP)
