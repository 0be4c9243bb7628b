"""The TE computes of hanasc's CPU convolutions: channel-blocked (``NCHW[x]c``) direct and depthwise
convolutions, NCHW convolutions computed in output-channel blocks, and the int8 dot-product ("pair" /
"quad") convolutions whose innermost input channels match a tensor intrinsic
(:mod:`hanasc.targets.x86_int8`, :mod:`hanasc.targets.arm_int8`).
:mod:`hanasc.targets.lowering.blocked_layout`
lowers Relax calls to them; :mod:`hanasc.targets.cpu_schedules` schedules them by their block names."""

from __future__ import annotations

import tvm
from tvm import te


def window_extent(size: int, padding: int, kernel: int, stride: int, dilation: int) -> int:
    """Output positions of a ``kernel`` window (``dilation``, ``stride``) over ``size`` + ``padding``."""
    return (size + padding - dilation * (kernel - 1) - 1) // stride + 1


def sliding_window(data: te.Tensor, kh: int, kw: int, strides, padding, dilation):
    """``(padded data, out_h, out_w, (sh, sw), (dh, dw))`` of a KhxKw window over axes 2 and 3 of ``data``
    (NCHW or NCHWc); ``padding`` is (top, left, bottom, right)."""
    height, width = int(data.shape[2]), int(data.shape[3])
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    out_h = window_extent(height, top + bottom, kh, sh, dh)
    out_w = window_extent(width, left + right, kw, sw, dw)
    inner = (0,) * (len(data.shape) - 4)
    padded = (
        tvm.topi.nn.pad(data, (0, 0, top, left, *inner), (0, 0, bottom, right, *inner), name="pad")
        if top or left or bottom or right
        else data
    )
    return padded, out_h, out_w, (sh, sw), (dh, dw)


def blocked_conv2d(
    data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, groups: int, out_dtype: str = ""
) -> te.Tensor:
    """``(N, C/b, H, W, b)`` x ``(O/b, I/ib, Kh, Kw, ib, b)`` -> ``(N, O/b, OH, OW, b)``.

    ``groups`` is 1 (a full convolution, ``ib`` the input block) or the channel count (depthwise, kernel
    ``(C/b, 1, Kh, Kw, 1, b)``). ``padding`` is (top, left, bottom, right). Products and sums are in
    ``out_dtype`` (default: the data's; int8 convolutions accumulate in int32).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, i_chunks, kh, kw, i_block, o_block = (int(d) for d in kernel.shape)
    padded, out_h, out_w, (sh, sw), (dh, dw) = sliding_window(data, kh, kw, strides, padding, dilation)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    dtype = out_dtype or data.dtype
    if groups == 1:
        rc = te.reduce_axis((0, i_chunks * i_block), "rc")
        return te.compute(
            (n, o_chunks, out_h, out_w, o_block),
            lambda b, oc, y, x, ob: te.sum(
                padded[b, rc // block, y * sh + ry * dh, x * sw + rx * dw, rc % block].astype(dtype)
                * kernel[oc, rc // i_block, ry, rx, rc % i_block, ob].astype(dtype),
                axis=[rc, ry, rx],
            ),
            name="conv2d_nchwc",
        )
    if groups != c_chunks * block or o_chunks != c_chunks or o_block != block:
        raise ValueError(f"blocked conv2d: groups={groups} is neither 1 nor depthwise")
    return te.compute(
        (n, o_chunks, out_h, out_w, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, oc, y * sh + ry * dh, x * sw + rx * dw, ob].astype(dtype)
            * kernel[oc, 0, ry, rx, 0, ob].astype(dtype),
            axis=[ry, rx],
        ),
        name="depthwise_conv2d_nchwc",
    )


DATA_CONVERT = "conv_data_convert"  # an NCHW conv's int8 input as the float codes it is computed in


def out_blocked_conv2d(
    data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, block: int, out_dtype: str = ""
) -> te.Tensor:
    """``(N, C, H, W)`` x ``(O, C, Kh, Kw)`` -> ``(N, O, OH, OW)``, computed in blocks of ``block`` output
    channels: for a convolution that stays NCHW because its input channels do not block (the RGB stem).

    Three stages: the weights repacked to ``(O/b, C, Kh, Kw, b)`` (``weight_pack``, a few hundred values
    per call), the convolution into a ``(N, O/b, OH, OW, b)`` buffer (``conv2d_nchw_oblocked``: the
    channel block is the vector :class:`hanasc.targets.cpu_schedules.BlockedConv` puts in registers) and
    its copy back to NCHW (``conv2d_nchw_unblock``, where the fused epilogue goes).
    """
    n = int(data.shape[0])
    out_channels, in_channels, kh, kw = (int(d) for d in kernel.shape)
    dtype = out_dtype or data.dtype
    compute = exact_float_dtype(data.dtype, kernel.dtype, dtype, in_channels * kh * kw)
    if compute != data.dtype:  # int8 codes converted once, as they are padded, not at every tap
        source = data
        data = te.compute(data.shape, lambda *i: source(*i).astype(compute), name=DATA_CONVERT)
    padded, out_h, out_w, (sh, sw), (dh, dw) = sliding_window(data, kh, kw, strides, padding, dilation)
    packed = te.compute(
        (out_channels // block, in_channels, kh, kw, block),
        lambda oc, c, y, x, ob: kernel[oc * block + ob, c, y, x].astype(compute),
        name="weight_pack",
    )
    rc, ry, rx = (
        te.reduce_axis((0, in_channels), "rc"),
        te.reduce_axis((0, kh), "ry"),
        te.reduce_axis((0, kw), "rx"),
    )
    conv = te.compute(
        (n, out_channels // block, out_h, out_w, block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, rc, y * sh + ry * dh, x * sw + rx * dw].astype(compute)
            * packed[oc, rc, ry, rx, ob].astype(compute),
            axis=[rc, ry, rx],
        ),
        name="conv2d_nchw_oblocked",
    )
    return te.compute(
        (n, out_channels, out_h, out_w),
        lambda b, c, y, x: conv[b, c // block, y, x, c % block].astype(dtype),
        name="conv2d_nchw_unblock",
    )


PAIR_CONV = "conv2d_nchwc_int_pairs"  # the block name cpu_schedules.BlockedConv tensorizes with vpmaddwd
QUAD_CONV = "conv2d_nchwc_int_quads"  # non-negative uint8 codes x int8, tensorized with vpmaddubsw
SDOT_CONV = "conv2d_nchwc_int_sdot"  # int8 x int8 quads on aarch64 with dotprod (targets.arm_int8)
DOT_CROP = "dot_conv_crop"  # a dot conv computed wider than its output (dot_conv_width), cut to it


def pair_group(data_dtype: str) -> int:
    """Input channels per intrinsic lane for a marked conv's data: 2 for int16 codes (``vpmaddwd``), 4 for
    non-negative uint8 codes (``vpmaddubsw``) and for int8 codes (``sdot``)."""
    return 2 if str(data_dtype) == "int16" else 4


def dot_conv_name(data_dtype: str) -> str:
    return {"int16": PAIR_CONV, "uint8": QUAD_CONV}.get(str(data_dtype), SDOT_CONV)


def pair_kernel_layout(out_block: int, group: int = 2) -> str:
    """The kernel layout of a pair (quad) conv: ``(O/ob, Kh, Kw, I/g, ob, g)``, ``g`` input channels
    innermost."""
    return f"OHWI{out_block}o{group}i"


WEIGHT_TILES = "dot_weight_tiles"  # 4/2-bit weights packed as whole tiles (computed once, when bound)
WEIGHT_UNPACK = "dot_weight_unpack"  # a tile unpacked in the kernel, next to the dot products reading it
DOT_UNSCALE = "dot_conv_unscale"  # the sums of unpacked (scaled) weights divided back


def weight_tiles(weight: te.Tensor, bits: int) -> te.Tensor:
    """int8 ``(O/ob, Kh, Kw, T, ob, g)`` with values in the signed ``bits`` range -> uint8
    ``(O/ob, Kh, Kw, T/k, ob, g)``, ``k = 8 // bits`` consecutive tiles sharing bytes
    (:func:`hanasc.passes.packing.pack_tiles`). A graph op on a late-bound weight: evaluated once, in numpy,
    by :func:`hanasc.targets.late_binding.prepack_weights`."""
    o, kh, kw, rows, ob, g = (int(d) for d in weight.shape)
    slots, mask = 8 // bits, tvm.tirx.const(2**bits - 1, "uint8")

    def byte(a, y, x, t, j, k):
        fields = [
            (weight[a, y, x, t * slots + s, j, k].astype("uint8") & mask) << tvm.tirx.const(s * bits, "uint8")
            for s in range(slots)
        ]
        out = fields[0]
        for field in fields[1:]:
            out = out | field
        return out

    return te.compute((o, kh, kw, rows // slots, ob, g), byte, name=WEIGHT_TILES)


def unpack_tiles(tiles: te.Tensor, bits: int) -> te.Tensor:
    """:func:`weight_tiles` unpacked: int8 ``(O/ob, Kh, Kw, T, ob, g)``, each value times ``2 ** (8 - bits)``
    (its field shifted to the top of the byte, the bits below cleared: a shift and a mask on whole
    registers, no sign extension)."""
    o, kh, kw, rows, ob, g = (int(d) for d in tiles.shape)
    slots = 8 // bits
    top = tvm.tirx.const((0xFF << (8 - bits)) & 0xFF, "uint8")

    def value(a, y, x, t, j, k):
        shift = (8 - bits * (t % slots + 1)).astype("uint8")
        return ((tiles[a, y, x, t // slots, j, k] << shift) & top).astype("int8")

    return te.compute((o, kh, kw, rows * slots, ob, g), value, name=WEIGHT_UNPACK)


def pair_conv2d(
    data: te.Tensor,
    kernel: te.Tensor,
    strides,
    padding,
    dilation,
    out_dtype: str = "int32",
    weight_bits: int = 8,
):
    """``(N, C/b, H, W, b)`` int16 (uint8) x ``(O/ob, Kh, Kw, C/g, ob, g)`` int8 -> ``(N, O/ob, OH, OW, ob)``
    int32, ``g`` = :func:`pair_group` (2 for int16 data, 4 for uint8).

    The convolution the ``vpmaddwd`` (``vpmaddubsw``) intrinsic computes (:mod:`hanasc.targets.x86_int8`):
    the reduction is split as (C/b, Kh, Kw, b/g, g) so that the innermost ``g`` input channels are adjacent
    in both the activation and the weight (no division in the index expressions). ``g`` must divide ``b``.

    ``weight_bits`` 4 or 2: ``kernel`` is :func:`weight_tiles`' uint8 bytes, unpacked inside the kernel
    (:func:`unpack_tiles`, scheduled next to the dot products that read it) and the int32 sums divided by
    ``2 ** (8 - bits)`` (exact: every product is a multiple of it). The scaled weights stay in -128..112,
    so every instruction path stays exact (``vpmaddubsw``'s int16 pair sums at most 2 * 127 * 128).
    """
    if weight_bits < 8:
        kernel = unpack_tiles(kernel, weight_bits)
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, kh, kw, _, o_block, group = (int(d) for d in kernel.shape)
    top, left, bottom, right = (int(p) for p in padding)
    sw, dw = int(strides[1]), int(dilation[1])
    out_w = window_extent(int(data.shape[3]), left + right, kw, sw, dw)
    wide = dot_conv_width(out_w)
    padding = (top, left, bottom, right + (wide - out_w) * sw)  # columns the cut-off tile reads
    padded, out_h, _, (sh, sw), (dh, dw) = sliding_window(data, kh, kw, strides, padding, dilation)
    per_block = block // group
    rco, ry, rx = (
        te.reduce_axis((0, c_chunks), "rco"),
        te.reduce_axis((0, kh), "ry"),
        te.reduce_axis((0, kw), "rx"),
    )
    rci, k = te.reduce_axis((0, per_block), "rci"), te.reduce_axis((0, group), "k")
    conv = te.compute(
        (n, o_chunks, out_h, wide, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, rco, y * sh + ry * dh, x * sw + rx * dw, rci * group + k].astype(out_dtype)
            * kernel[oc, ry, rx, rco * per_block + rci, ob, k].astype(out_dtype),
            axis=[rco, ry, rx, rci, k],
        ),
        name=dot_conv_name(data.dtype),
    )
    if weight_bits < 8:
        shift = tvm.tirx.const(8 - weight_bits, out_dtype)
        conv = te.compute(conv.shape, lambda *i: conv(*i) >> shift, name=DOT_UNSCALE)
    if wide == out_w:
        return conv
    return te.compute((n, o_chunks, out_h, out_w, o_block), lambda *i: conv(*i), name=DOT_CROP)


DOT_TILE = 8  # output pixels per register tile of the dot-product kernels (cpu_schedules._schedule_pairs)


def x_tile(width: int, limit: int = 8) -> int:
    """The widest tile of output pixels (at most ``limit``) that divides the output width."""
    return next(t for t in range(min(limit, width), 0, -1) if width % t == 0)


def divisors_fall_short(width: int, limit: int = 8) -> bool:
    """Whether no divisor of ``width`` reaches ``limit // 2`` pixels (prime widths such as 11, 13; 26):
    whole ``limit``-pixel tiles, the last one cut short, then beat the divisor tiles."""
    return x_tile(width, limit) < limit // 2 and width > limit


def dot_conv_width(out_w: int, tile: int = DOT_TILE) -> int:
    """The output width a dot-product conv computes: ``out_w``, or ``out_w`` rounded up to whole
    ``tile``-pixel tiles when :func:`divisors_fall_short`; the extra columns read extra right padding and
    are cut off before the epilogue. SqueezeNet 1.1 W8A8 (widths 111, 27, 13; 1 thread, AVX512-VNNI):
    7.7 -> 4.6 ms, outputs identical."""
    return -(-out_w // tile) * tile if divisors_fall_short(out_w, tile) else out_w


def exact_float_dtype(data_dtype: str, kernel_dtype: str, out_dtype: str, reduction: int) -> str:
    """The dtype to accumulate a convolution in: ``float32`` for an int8 x int8 -> int32 one whose sums
    of ``reduction`` products stay below 2**24 (each partial sum is then an exact float32 integer, and
    vector FMAs are cheaper than AVX2's ``vpmulld``), else ``out_dtype``."""
    dtypes = {str(data_dtype), str(kernel_dtype)}
    largest = 128 if dtypes == {"int8"} else 255 if dtypes <= {"int8", "uint8"} else None
    exact = largest is not None and reduction * largest * largest < 2**24
    return "float32" if exact and str(out_dtype) == "int32" else out_dtype


def pair_index_map(out_block: int, group: int = 2):
    """OIHW -> :func:`pair_kernel_layout` (``(O/ob, Kh, Kw, I/g, ob, g)``)."""
    return tvm.tirx.IndexMap.from_func(
        lambda o, i, y, x: (o // out_block, y, x, i // group, o % out_block, i % group), ndim=4
    )
