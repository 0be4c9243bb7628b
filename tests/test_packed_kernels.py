"""4- and 2-bit weights unpacked inside the int8 dot-product kernels: the tile layout's arithmetic, exact
outputs on every x86 instruction path (pointwise, KxK, strided, padded, signed and non-negative codes, the
classifier), and no unpacking left outside the kernels of the artifact."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_int8_kernels import _conv_reference, _with_params
from tvm import relax

from hanasc.core.relax_params import is_packed, weights_of
from hanasc.passes.packing import (
    pack_bits,
    pack_tiles,
    scaled_tiles,
    tiles_pack,
    unpack_expr,
    values_per_byte,
)
from hanasc.targets import host
from hanasc.targets.isa import supports_pair_kernels
from hanasc.targets.late_binding import compile_late_bound, fused_as_shipped
from hanasc.targets.lowering.conv_compute import WEIGHT_TILES, WEIGHT_UNPACK

needs_avx2 = pytest.mark.skipif(
    not supports_pair_kernels(host.tvm_target()), reason="the dot-product kernels need an x86 CPU with AVX2"
)


def _signed_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@pytest.mark.parametrize("bits", [4, 2])
def test_tiles_unpack_to_the_values_times_the_field_scale(bits):
    """Tile ``t`` of a group shares its bytes with the group's other tiles; shifting its field to the top
    of the byte and clearing the rest gives the value times ``2 ** (8 - bits)``, for every value."""
    lo, hi = _signed_range(bits)
    values = np.random.default_rng(bits).integers(lo, hi + 1, (2, 3, 1, 8, 16, 4)).astype(np.int8)
    values[0, 0, 0, :, 0, 0] = lo
    values[0, 0, 0, :, 0, 1] = hi
    tiles = pack_tiles(values, bits)
    assert tiles.dtype == np.uint8 and tiles.shape == (2, 3, 1, 8 * bits // 8, 16, 4)
    np.testing.assert_array_equal(scaled_tiles(tiles, bits).astype(np.int32), values * 2 ** (8 - bits))
    assert tiles_pack(8, bits) and not tiles_pack(values_per_byte(bits) + 1, bits)


def _packed_conv_module(w: np.ndarray, bits: int, floor: int, size: int, **conv):
    """``conv2d(max(x, floor), unpack(w))`` on int8 codes, ``w`` stored as packed ``bits``-bit codes (as
    :class:`hanasc.passes.quantize.QuantizeLayers` stores them)."""
    bb = relax.BlockBuilder()
    packed = pack_bits(w, bits)
    xv = relax.Var("x", relax.TensorType((1, w.shape[1], size, size), "int8"))
    wv = relax.Var("w", relax.TensorType(packed.shape, "uint8"))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            data = bb.emit(relax.op.maximum(xv, relax.const(floor, "int8")))
            codes = bb.emit(unpack_expr(wv, bits, w.shape))
            y = bb.emit_output(relax.op.nn.conv2d(data, codes, out_dtype="int32", **conv))
        bb.emit_func_output(y)
    return _with_params(bb.get(), {"w": packed})


def _shipped_kernels(mod) -> dict[str, tvm.tirx.PrimFunc]:
    fused = fused_as_shipped(mod, host.tvm_target())
    return {gv.name_hint: f for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def _assert_unpacked_in_the_dot_kernels(mod) -> None:
    """Every 4/2-bit weight is unpacked inside a dot-product kernel: no unpacking kernel (shifts of the
    packed codes) and no tile packing run per inference."""
    kernels = _shipped_kernels(mod)
    inside = [name for name, f in kernels.items() if WEIGHT_UNPACK in f.script()]
    assert inside, sorted(kernels)
    assert not [name for name in kernels if "left_shift" in name or WEIGHT_TILES in name], sorted(kernels)


@needs_avx2
@pytest.mark.parametrize("vnni", ["1", "0"])
@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("floor", [0, -1])
@pytest.mark.parametrize("window,stride,pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1)])
def test_packed_convs_are_exact_and_unpack_in_the_kernel(monkeypatch, vnni, bits, floor, window, stride, pad):
    """int8 x 4/2-bit convs equal numpy's exact sums, the extremes of both ranges included, on quads
    (non-negative codes; signed codes + 128 with VNNI) and int16 pairs (signed codes without VNNI, or
    padded), with the weights unpacked only inside the conv kernel."""
    monkeypatch.setenv("HANASC_INT8_VNNI", vnni)
    lo, hi = _signed_range(bits)
    rng = np.random.default_rng(bits * 7 + window + stride)
    x = rng.integers(-127, 128, (1, 48, 9, 9)).astype(np.int8)
    w = rng.integers(lo, hi + 1, (24, 48, window, window)).astype(np.int8)
    x[0, :, :3, :3], w[0], w[1] = 127, hi, lo
    mod = _packed_conv_module(w, bits, floor, 9, strides=stride, padding=pad)
    _assert_unpacked_in_the_dot_kernels(mod)
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    want = _conv_reference(np.maximum(x[0].astype(np.int64), floor), w, stride, pad)
    np.testing.assert_array_equal(got, want.astype(np.int32))


@needs_avx2
def test_tiles_that_do_not_fill_bytes_keep_the_graph_unpacking():
    """2-bit weights of 8 input channels (two tiles of 4, four needed a byte) stay unpacked in the graph,
    and stay exact."""
    rng = np.random.default_rng(2)
    x = rng.integers(-127, 128, (1, 8, 6, 6)).astype(np.int8)
    w = rng.integers(-2, 2, (16, 8, 1, 1)).astype(np.int8)
    mod = _packed_conv_module(w, 2, 0, 6)
    kernels = _shipped_kernels(mod)
    assert not [name for name, f in kernels.items() if WEIGHT_UNPACK in f.script()]
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    np.testing.assert_array_equal(got, _conv_reference(np.maximum(x[0], 0), w, 1, 0).astype(np.int32))


def _packed_dense_module(w: np.ndarray, bits: int, rows: int):
    """``relu(x) @ unpack(w).T`` (ONNX Gemm with transB=1) with ``w`` (N, K) stored as packed codes."""
    bb = relax.BlockBuilder()
    packed = pack_bits(w, bits)
    xv = relax.Var("x", relax.TensorType((rows, w.shape[1]), "int8"))
    wv = relax.Var("w", relax.TensorType(packed.shape, "uint8"))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            data = bb.emit(relax.op.maximum(xv, relax.const(0, "int8")))
            codes = bb.emit(unpack_expr(wv, bits, w.shape))
            weight = bb.emit(relax.op.permute_dims(codes, [1, 0]))
            y = bb.emit_output(relax.op.matmul(data, weight, out_dtype="int32"))
        bb.emit_func_output(y)
    return _with_params(bb.get(), {"w": packed})


@needs_avx2
@pytest.mark.parametrize("bits", [4, 2])
def test_packed_classifier_is_exact_and_unpacks_in_the_kernel(bits):
    """A 4/2-bit classifier (1280 -> 1000, read through a transpose) runs as a dot conv reading the packed
    bytes; its weights stay 1/2 (1/4) of int8 in the library."""
    lo, hi = _signed_range(bits)
    rng = np.random.default_rng(bits)
    x = rng.integers(-127, 128, (1, 1280)).astype(np.int8)
    w = rng.integers(lo, hi + 1, (1000, 1280)).astype(np.int8)
    mod = _packed_dense_module(w, bits, 1)
    _assert_unpacked_in_the_dot_kernels(mod)
    assert sum(v.nbytes for v in weights_of(mod).values() if is_packed(v)) == w.size * bits // 8
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    want = np.maximum(x, 0).astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(got, want.astype(np.int32))
