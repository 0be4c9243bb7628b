"""int8 depthwise convs as four-tap byte dot products (passes.quad_depthwise, x86_int8.register_depthwise):
exact against numpy on every window, stride, width and sign of the codes, their weights prepacked once,
and the transpose (vpermb, or vpermd + vpshufb) and vpdpbusd in the assembly of a library built for a CPU
that has them."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax, te

from hanasc.core.relax_params import bind_weights, is_packed, weights_of
from hanasc.passes.packing import pack_bits, unpack_expr
from hanasc.targets import host, isa, pipelines
from hanasc.targets.late_binding import compile_late_bound, fused_as_shipped, prepack_weights
from hanasc.targets.lowering.blocked_layout import convert_to_blocked
from hanasc.targets.lowering.quad_depthwise import (
    QUAD_DEPTHWISE,
    QUAD_UNSHIFT,
    quad_offset,
    quad_offset_values,
    quad_weight,
    quad_weight_values,
)

VBMI_CPU = {"kind": "llvm", "mcpu": "icelake-server"}  # AVX512-VNNI and VBMI; compiled for, not run

needs_quads = pytest.mark.skipif(
    not isa.supports_quad_depthwise(host.tvm_target()),
    reason="the four-tap depthwise kernel runs on x86 CPUs with AVX512-VNNI and AVX512-BW",
)


def _depthwise_module(channels: int, size: int, w: np.ndarray, floor: int, stride: int, bits: int = 8):
    """``depthwise_conv2d(max(x, floor), w)`` on int8 codes, padded to keep the size (``floor`` 0: the codes
    cannot be negative; -128: they can); ``bits`` 4: ``w`` stored packed, unpacked in the graph."""
    bb = relax.BlockBuilder()
    kernel = w.shape[2]
    xv = relax.Var("x", relax.TensorType((1, channels, size, size), "int8"))
    stored = pack_bits(w, bits) if bits < 8 else w
    wv = relax.Var("w", relax.TensorType(stored.shape, str(stored.dtype)))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            data = bb.emit(relax.op.maximum(xv, relax.const(floor, "int8")))
            weight = bb.emit(unpack_expr(wv, bits, w.shape)) if bits < 8 else wv
            conv = relax.op.nn.conv2d(
                data, weight, strides=stride, padding=kernel // 2, groups=channels, out_dtype="int32"
            )
            y = bb.emit_output(conv)
        bb.emit_func_output(y)
    mod = bb.get()
    func = mod["main"].with_attr("params", [tvm.runtime.tensor(stored)])
    out = tvm.IRModule(dict(mod.functions_items()))
    out["main"] = func
    return out


def _reference(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Exact int64 depthwise conv of ``x`` (C, H, W) with ``w`` (C, 1, K, K), padding K // 2."""
    k = w.shape[2]
    pad = k // 2
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    out = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,cij->chw", windows[:, : out[0], : out[1]], w[:, 0].astype(np.int64))[None]


def _shipped_kernels(mod, target=None) -> dict[str, str]:
    """The fused kernels of the shipped build (no schedules) by name, as TVMScript."""
    fused = fused_as_shipped(mod, target or host.tvm_target())
    return {gv.name_hint: f.script() for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_weight_layout_and_offset_ops_match_their_numpy_forms():
    """The graph ops (TE) that give the kernel its weight rows in groups of four taps and the offset of
    shifted codes compute what prepacking computes in numpy, for 3x3, 5x5 and 7x7 windows."""
    rng = np.random.default_rng(1)
    for k in (3, 5, 7):
        w = rng.integers(-128, 128, (32, 1, k, k)).astype(np.int8)
        placeholder = te.placeholder(w.shape, "int8", "w")
        for op, values in ((quad_weight, quad_weight_values), (quad_offset, quad_offset_values)):
            out = op(placeholder)
            lib = tvm.compile(te.create_prim_func([placeholder, out]), target="llvm")
            got = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
            lib(tvm.runtime.tensor(w), got)
            np.testing.assert_array_equal(got.numpy(), values(w))
    tiles = quad_weight_values(w)
    assert tiles.shape == (2, 7, 2, 16, 4) and not tiles[:, :, 1, :, 3].any()  # the eighth tap: zero


@needs_quads
@pytest.mark.parametrize("floor", [0, -128])
@pytest.mark.parametrize("window,stride,size", [(3, 1, 14), (3, 2, 13), (5, 1, 11), (5, 2, 16), (7, 1, 8)])
def test_quad_depthwise_is_exact(floor, window, stride, size):
    """Non-negative codes read as bytes, signed ones shifted by 128 (the border too) and corrected: both
    give numpy's exact sums, extremes included, at widths tiled whole (14, 16), cut (13, 11) and strided."""
    rng = np.random.default_rng(window * 10 + stride + size)
    x = rng.integers(-128, 128, (1, 32, size, size)).astype(np.int8)
    w = rng.integers(-128, 128, (32, 1, window, window)).astype(np.int8)
    x[0, :, :3, :3], w[0], w[1] = 127, 127, -128
    x[0, 2:4, -3:, -3:], w[2] = -128, -128
    mod = _depthwise_module(32, size, w, floor, stride)
    kernels = {name: text for name, text in _shipped_kernels(mod).items() if QUAD_DEPTHWISE in name}
    assert len(kernels) == 1 and (QUAD_UNSHIFT in next(iter(kernels.values()))) == (floor < 0)
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    want = _reference(np.maximum(x[0], floor), w, stride)
    np.testing.assert_array_equal(got, want.astype(np.int32))


@needs_quads
def test_packed_depthwise_weights_and_the_switch(monkeypatch):
    """4-bit weights unpacked in the graph feed the same kernel (its weight rows computed once, when the
    weights are bound); ``HANASC_QUAD_DEPTHWISE=0`` keeps the int32-widened kernel, with the same sums."""
    rng = np.random.default_rng(7)
    w = rng.integers(-8, 8, (48, 1, 3, 3)).astype(np.int8)
    x = rng.integers(-128, 128, (1, 48, 12, 12)).astype(np.int8)
    mod = _depthwise_module(48, 12, w, 0, 1, bits=4)
    want = _reference(np.maximum(x[0], 0), w, 1).astype(np.int32)
    for flag in ("1", "0"):
        monkeypatch.setenv("HANASC_QUAD_DEPTHWISE", flag)
        names = list(_shipped_kernels(mod))
        assert any(QUAD_DEPTHWISE in n for n in names) == (flag == "1")
        got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
        np.testing.assert_array_equal(got, want)


def test_depthwise_weights_are_prepacked_once():
    """The weight rows and the offset are new late-bound parameters, computed in numpy: no kernel of the
    artifact rearranges depthwise weights per inference."""
    w = np.random.default_rng(3).integers(-128, 128, (32, 1, 5, 5)).astype(np.int8)
    mod = _depthwise_module(32, 9, w, -128, 1)
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    blocked = convert_to_blocked(bind_weights(mod, keep_packed=True), pair_kernels=True, quad_depthwise=True)
    assert "depthwise_quad_weight" in blocked["main"].script()
    prepacked, values = prepack_weights(blocked, packed)
    assert "depthwise_quad_weight" not in prepacked["main"].script()
    assert "depthwise_quad_offset" not in prepacked["main"].script()
    by_shape = {v.shape: v for v in values.values()}
    np.testing.assert_array_equal(by_shape[(2, 5, 2, 16, 4)], quad_weight_values(w))
    np.testing.assert_array_equal(by_shape[(2, 16)], quad_offset_values(w))


CASCADE_LAKE = {"kind": "llvm", "mcpu": "cascadelake"}  # AVX512-VNNI and BW, no VBMI


def _scheduled_depthwise(mod, target) -> str:
    """The scheduled four-tap depthwise kernel of ``mod`` built for ``target``, as TVMScript."""
    blocked = convert_to_blocked(bind_weights(mod, keep_packed=True), pair_kernels=True, quad_depthwise=True)
    with target:
        fused = tvm.transform.Sequential(pipelines.fused_passes(target))(blocked)
        scheduled = tvm.transform.Sequential(pipelines.default_schedule_passes(target))(fused)
    (kernel,) = [f.script() for gv, f in scheduled.functions.items() if QUAD_DEPTHWISE in gv.name_hint]
    return kernel


@pytest.mark.parametrize(
    "cpu,transpose",
    [
        (VBMI_CPU, ["llvm.x86.avx512.permvar.qi.512"]),
        (CASCADE_LAKE, ["llvm.x86.avx512.permvar.si.512", "llvm.x86.avx512.pshuf.b.512"]),
    ],
)
def test_avx512_vnni_cpus_get_the_four_tap_kernel(tmp_path, cpu, transpose):
    """A CPU with AVX512-VNNI gets the kernel: its four pixels transposed by ``vpermb`` with VBMI (Ice Lake),
    by ``vpermd`` + ``vpshufb`` without (Cascade Lake), summed by a 512-bit ``vpdpbusd`` (in the scheduled
    TIR, and in the assembly of a library built for that CPU, on any x86 host). Zen 3 (AVX2, no VNNI)
    keeps the int32-widened depthwise code."""
    target = tvm.target.Target(cpu)
    assert isa.supports_quad_depthwise(target)
    assert isa.depthwise_vpermb(target) == (cpu is VBMI_CPU)
    assert not isa.supports_quad_depthwise(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"}))
    w = np.random.default_rng(5).integers(-128, 128, (32, 1, 3, 3)).astype(np.int8)
    mod = _depthwise_module(32, 16, w, -128, 1)
    kernel = _scheduled_depthwise(mod, target)
    assert all(name in kernel for name in transpose) and "llvm.x86.avx512.vpdpbusd.512" in kernel
    objdump = shutil.which("objdump")
    if objdump:
        lib = tmp_path / "dw.so"
        compile_late_bound(mod, target).export_library(str(lib))
        assembly = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True).stdout
        mnemonics = ["vpermb"] if cpu is VBMI_CPU else ["vpermd", "vpshufb"]
        assert all(m in assembly for m in mnemonics) and "vpdpbusd" in assembly


@needs_quads
@pytest.mark.parametrize("floor", [0, -128])
def test_transpose_without_vbmi_is_exact(monkeypatch, floor):
    """The ``vpermd`` + ``vpshufb`` transpose (CPUs without VBMI; forced here) gives numpy's exact sums."""
    monkeypatch.setenv("HANASC_DEPTHWISE_VPERMB", "0")
    rng = np.random.default_rng(21)
    x = rng.integers(-128, 128, (1, 48, 13, 13)).astype(np.int8)
    w = rng.integers(-128, 128, (48, 1, 5, 5)).astype(np.int8)
    mod = _depthwise_module(48, 13, w, floor, 1)
    kernel = _scheduled_depthwise(mod, host.tvm_target())
    assert "llvm.x86.avx512.pshuf.b.512" in kernel and "permvar.qi" not in kernel
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    np.testing.assert_array_equal(got, _reference(np.maximum(x[0], floor), w, 1).astype(np.int32))
