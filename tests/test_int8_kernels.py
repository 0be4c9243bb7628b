"""hanasc's CPU kernels for int8 models: the NCHW (RGB stem) convolution computed in output-channel blocks,
the vectorized element-wise kernels (activation quantize, layout_transform) and late-bound weights prepacked
into the layout their op uses. Outputs against numpy / onnxruntime, schedules by inspection."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tvm
from builders import SqueezeExciteHardswish, export_module
from torch import nn
from tvm import relax

import hanasc
from hanasc.core.relax_params import bind_weights, is_packed, weights_of
from hanasc.frontend.calibration import calibrate
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.packing import unpacked_param
from hanasc.passes.quantize import FakeQuantizeLayers, QuantizeLayers
from hanasc.targets import host, isa, pipelines, x86_int8
from hanasc.targets.cpu_nonconv_schedules import Injective
from hanasc.targets.isa import supports_pair_kernels
from hanasc.targets.late_binding import compile_late_bound, prepack_weights
from hanasc.targets.lowering.blocked_layout import convert_to_blocked
from hanasc.targets.lowering.conv_compute import DOT_CROP, PAIR_CONV, QUAD_CONV, dot_conv_width

SHAPE = (1, 3, 32, 32)


class StemNet(nn.Module):
    """An RGB stem (3x3 stride 2, stays NCHW), depthwise, pointwise with a residual add, a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.stem(x), 0.0, 6.0)
        y = y + self.pw(torch.clamp(self.dw(y), 0.0, 6.0))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def stem_net(tmp_path_factory):
    torch.manual_seed(0)
    path = export_module(StemNet().eval(), SHAPE, Path(tmp_path_factory.mktemp("int8k")) / "stem.onnx")
    loaded, ranges, _ = _load_calibrated(path, SHAPE)
    config = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in loaded.layers})
    return path, loaded, config, ranges


def _load_calibrated(path: Path, shape: tuple[int, ...]):
    """The model at ``path``, activation ranges calibrated on 4 random inputs of ``shape``, and the random
    generator (for further inputs)."""
    loaded = hanasc.load_model(path)
    rng = np.random.default_rng(0)
    return loaded, calibrate(loaded, [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]), rng


def _input(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def _scheduled_kernels(
    mod, pair_kernels: bool = False, target=None, signed_weights=None
) -> dict[str, tvm.tirx.PrimFunc]:
    """The PrimFuncs of ``mod`` after hanasc's CPU pipeline up to the default schedules (for the host, or
    ``target``; ``signed_weights``: int8 weight values, for signed quads)."""
    target = target or host.tvm_target()
    mod = bind_weights(mod, keep_packed=True)
    mod = convert_to_blocked(mod, pair_kernels=pair_kernels, signed_weights=signed_weights)
    with target:
        mod = tvm.transform.Sequential(pipelines.fused_passes(target))(mod)
        mod = tvm.transform.Sequential(pipelines.default_schedule_passes(target))(mod)
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_fp32_artifact_matches_onnxruntime(stem_net):
    path, loaded, _, _ = stem_net
    x = _input()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = host.run(host.build_artifact(loaded.mod), [x])[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_w8a8_artifact_matches_fake_quantized(stem_net):
    _, loaded, config, ranges = stem_net
    x = _input()
    real = host.run(host.build_artifact(QuantizeLayers(config, ranges)(loaded.mod)), [x])[0]
    fake = host.run(host.build(bind_weights(FakeQuantizeLayers(config, ranges)(loaded.mod))), [x])[0]
    fp32 = host.run(host.build(bind_weights(loaded.mod)), [x])[0]
    scale = np.abs(fake).max()
    # integer convs are exact; only float rounding of requantization (FMA contraction) may differ
    assert np.abs(real - fake).max() <= 2e-3 * scale
    assert np.abs(real - fp32).max() > 4e-3 * scale  # it really is quantized


def test_stem_and_quantize_kernels_are_vectorized(stem_net):
    _, loaded, config, ranges = stem_net
    kernels = _scheduled_kernels(QuantizeLayers(config, ranges)(loaded.mod))
    stem = [f for name, f in kernels.items() if "conv2d_nchw_oblocked" in name]
    quantize = [f for name, f in kernels.items() if name.startswith("fused_multiply")]
    assert len(stem) == 1 and quantize  # the stem conv and the input's standalone quantize
    for func in stem + quantize:
        assert func.attrs.get("tirx.is_scheduled", False)
        assert "T.vectorized" in func.script()
    assert "float32" in str(stem[0].script())  # int8 x int8 accumulated exactly in float32 FMAs


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("size", [17, 149])
def test_nchw_conv_is_exact(dtype, size):
    """An NCHW conv (3 input channels) with extreme int8 values, late-bound weight: equals numpy. Size 149:
    output rows of 75, copied back to NCHW as 64 vectorized columns and a tail of 11."""
    rng = np.random.default_rng(1)
    lo, hi = (-128, 128) if dtype == "int8" else (-3, 4)
    x = rng.integers(lo, hi, (1, 3, size, size)).astype(dtype)
    w = rng.integers(lo, hi, (24, 3, 3, 3)).astype(dtype)
    x[0, :, :4, :4], w[:4] = lo, lo  # all-(-128) products: the largest sums
    out_dtype = "int32" if dtype == "int8" else "float32"
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, dtype))
    wv = relax.Var("w", relax.TensorType(w.shape, dtype))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(xv, wv, strides=2, padding=1, out_dtype=out_dtype))
        bb.emit_func_output(y)
    mod = bb.get()
    if dtype == "int8":  # late bound, like a quantized model's weights
        executable = compile_late_bound(_with_params(mod, {"w": w}), host.tvm_target())
    else:
        executable = host.build_artifact(relax.transform.BindParams("main", {"w": w})(mod))
    got = host.run(executable, [x])[0]
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = sum(
        np.einsum(
            "chw,oc->ohw", xp[0, :, ry : ry + size : 2, rx : rx + size : 2], w[:, :, ry, rx].astype(np.int64)
        )
        for ry in range(3)
        for rx in range(3)
    )[None]
    np.testing.assert_array_equal(got, want.astype(out_dtype))


def _with_params(mod, values: dict[str, np.ndarray]):
    """``mod`` with ``values`` as its weight parameters' values (the ``params`` attribute hanasc uses)."""
    func = mod["main"].with_attr("params", [tvm.runtime.tensor(v) for v in values.values()])
    out = tvm.IRModule(dict(mod.functions_items()))
    out["main"] = func
    return out


def test_injective_rule_vectorizes_a_quantize():
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 3, 20, 24), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            codes = relax.op.clip(
                relax.op.round(relax.op.divide(xv, relax.const(0.05, "float32"))), -127, 127
            )
            out = bb.emit_output(relax.op.astype(codes, "int8"))
        bb.emit_func_output(out)
    target = host.tvm_target()
    with target:
        mod = tvm.transform.Sequential(pipelines.fused_passes(target))(bb.get())
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1
    with target:
        sch = Injective().apply(funcs[0], target, False)
    assert sch is not None and "T.vectorized" in sch.mod["main"].script()
    x = np.random.default_rng(2).standard_normal((1, 3, 20, 24)).astype(np.float32) * 5
    got = host.run(host.build_artifact(bb.get()), [x])[0]
    np.testing.assert_array_equal(got, np.clip(np.round(x / np.float32(0.05)), -127, 127).astype(np.int8))


@pytest.mark.parametrize(
    "shape,index_map,output_order",
    [
        ((1, 2, 6, 5, 16), lambda n, c, h, w, b: (n, c * 2 + b // 8, h, w, b % 8), True),  # 16c -> 8c
        ((1, 32, 6, 20), lambda n, c, h, w: (n, c // 16, h, w, c % 16), True),  # NCHW -> 16c
        ((1, 4, 6, 5, 8), lambda n, c, h, w, b: (n, c // 2, h, w, (c % 2) * 8 + b), False),  # 8c -> 16c
    ],
)
def test_layout_transforms_store_contiguous_vectors(shape, index_map, output_order):
    """A layout_transform iterates in the order whose innermost run is shorter (the output's for 16c -> 8c
    and NCHW -> 16c, the input's for 8c -> 16c), so the vector lanes are contiguous on the store side; the
    values are the input's, moved."""
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.layout_transform(xv, index_map))
        bb.emit_func_output(out)
    target = host.tvm_target()
    with target:
        mod = tvm.transform.Sequential(pipelines.fused_passes(target))(bb.get())
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    with target:
        sch = Injective().apply(func, target, False)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    innermost = sch.get(sch.get_loops(block)[-1])
    assert innermost.kind == tvm.tirx.ForKind.VECTORIZED
    moved = int(out.ty.shape[-1]) if output_order else shape[-1]
    assert int(innermost.extent) == moved  # the output's last axis in its order, else the input's
    x = np.random.default_rng(1).integers(-127, 128, shape).astype(np.int8)
    got = host.run(host.build_artifact(bb.get()), [x])[0]
    want = np.empty(got.shape, np.int8)
    for index in np.ndindex(*shape):
        want[tuple(int(i) for i in index_map(*index))] = x[index]
    np.testing.assert_array_equal(got, want)


def test_prepacked_weights_leave_no_layout_op_on_parameters(stem_net):
    _, loaded, config, ranges = stem_net
    mod = QuantizeLayers(config, ranges)(loaded.mod)
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    early = convert_to_blocked(bind_weights(mod, keep_packed=True))
    prepacked, values = prepack_weights(early, packed)
    params = {p.name for p in prepacked["main"].params}
    assert set(values) <= params and any(name.endswith(".packed0") or ".packed" in name for name in values)
    for binding in prepacked["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Call) and value.op.name in (
            "relax.layout_transform",
            "relax.permute_dims",
        ):
            assert not (isinstance(value.args[0], relax.Var) and value.args[0].name in params)


@pytest.mark.parametrize("bits", [4, 2])
def test_packed_weights_are_repacked_in_the_layout_their_op_reads(stem_net, bits):
    """4/2-bit weights stay packed, but in the order the conv / classifier reads them: per inference only
    the unpacking runs (no layout_transform or transpose of unpacked weights), and the outputs are those
    of the same model with the weights unpacked in the original order (int8 storage)."""
    _, loaded, _, ranges = stem_net
    config = Config(layers={layer.name: LayerChoice(w_bits=bits, a_bits=8) for layer in loaded.layers})
    mod = QuantizeLayers(config, ranges)(loaded.mod)
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    assert packed
    early = convert_to_blocked(
        bind_weights(mod, keep_packed=True), pair_kernels=supports_pair_kernels(host.tvm_target())
    )
    prepacked, values = prepack_weights(early, packed)
    repacked = [name for name in values if ".packed" in name]
    assert repacked and all(values[name].dtype == np.uint8 for name in repacked)
    assert sum(v.size for v in values.values()) <= sum(v.size for v in packed.values()) + 8 * len(packed)
    bindings = {b.var: b.value for b in prepacked["main"].body.blocks[0].bindings}
    layout_ops = ("relax.layout_transform", "relax.permute_dims")
    for value in bindings.values():
        if isinstance(value, relax.Call) and value.op.name in layout_ops:  # none on unpacked weights
            assert unpacked_param(value.args[0], bindings.get, values) is None
    x = _input()
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    plain = host.run(host.build(bind_weights(mod)), [x])[0]  # weights folded as int8 constants
    np.testing.assert_allclose(got, plain, rtol=0, atol=2e-3 * np.abs(plain).max())


# ---------------------------------------------------------------------------------------------------------
# the vpmaddwd pair kernel (x86 with AVX2): int8 pointwise convs as int16 x int8 pairs

needs_avx2 = pytest.mark.skipif(
    not supports_pair_kernels(host.tvm_target()), reason="the pair kernel needs an x86 CPU with AVX2"
)


def _pointwise_module(cin: int, cout: int, size: int, w: np.ndarray):
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, cin, size, size), "int8"))
    wv = relax.Var("w", relax.TensorType(w.shape, "int8"))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(xv, wv, out_dtype="int32"))
        bb.emit_func_output(y)
    return _with_params(bb.get(), {"w": w})


def _pair_kernels(mod) -> dict[str, tvm.tirx.PrimFunc]:
    """The scheduled pair- and quad-conv PrimFuncs of ``mod`` in the host pipeline (pair kernels on)."""
    return {**_int8_kernels(mod, PAIR_CONV), **_int8_kernels(mod, QUAD_CONV)}


@needs_avx2
@pytest.mark.parametrize("cin,cout,size", [(40, 16, 7), (144, 24, 14), (24, 48, 9), (32, 8, 12)])
def test_pair_kernel_is_exact(cin, cout, size):
    """int8 x int8 -> int32 pointwise convs (cin 40, 24: 8-channel blocks) equal numpy, extremes included."""
    rng = np.random.default_rng(cin + cout)
    x = rng.integers(-127, 128, (1, cin, size, size)).astype(np.int8)
    w = rng.integers(-128, 128, (cout, cin, 1, 1)).astype(np.int8)
    x[0, :, :2, :2], w[:2] = -127, -128  # the largest sums
    mod = _pointwise_module(cin, cout, size, w)
    assert len(_pair_kernels(mod)) == 1
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    want = np.einsum("chw,oc->ohw", x[0].astype(np.int64), w[:, :, 0, 0].astype(np.int64))[None]
    np.testing.assert_array_equal(got, want.astype(np.int32))


@needs_avx2
def test_pair_kernel_uses_vpmaddwd(tmp_path, monkeypatch):
    monkeypatch.setenv("HANASC_INT8_VNNI", "0")  # the AVX2 path, also on a VNNI CPU
    w = np.random.default_rng(3).integers(-127, 128, (16, 48, 1, 1)).astype(np.int8)
    mod = _pointwise_module(48, 16, 8, w)
    (kernel,) = _pair_kernels(mod).values()
    llvm_name, mnemonic = x86_int8.instructions(host.tvm_target())[2]
    assert llvm_name in kernel.script()  # tensorized
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    _, values = prepack_weights(
        convert_to_blocked(bind_weights(mod, keep_packed=True), pair_kernels=True), packed
    )
    assert [v.shape for v in values.values()] == [(1, 1, 1, 24, 16, 2)]  # OHWI16o2i, packed once at bind time
    objdump = shutil.which("objdump")
    if objdump:
        lib = tmp_path / "pair.so"
        compile_late_bound(mod, host.tvm_target()).export_library(str(lib))
        assembly = subprocess.run(
            [objdump, "-d", str(lib)], capture_output=True, text=True, check=True
        ).stdout
        assert mnemonic in assembly


def _relu_pointwise_module(cin: int, cout: int, size: int, w: np.ndarray, floor: str, **conv):
    """``conv2d(max(x, floor), w, **conv)`` on int8 codes: ``floor`` "zero" (a ReLU: the codes cannot be
    negative), "importer" (0 through ``where(isnan(0), -inf, 0)``, as TVM's ONNX importer writes a Clip
    bound) or "negative" (-1: they can). ``conv``: strides, padding of a KxK ``w``."""
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, cin, size, size), "int8"))
    wv = relax.Var("w", relax.TensorType(w.shape, "int8"))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            if floor == "importer":
                zero = relax.const(0.0, "float32")
                low = bb.emit(
                    relax.op.where(relax.op.isnan(zero), relax.const(float("-inf"), "float32"), zero)
                )
                xf = bb.emit(relax.op.maximum(relax.op.astype(xv, "float32"), low))
                data = bb.emit(relax.op.astype(relax.op.round(xf), "int8"))
            else:
                data = bb.emit(relax.op.maximum(xv, relax.const(0 if floor == "zero" else -1, "int8")))
            y = bb.emit_output(relax.op.nn.conv2d(data, wv, out_dtype="int32", **conv))
        bb.emit_func_output(y)
    return _with_params(bb.get(), {"w": w})


def _conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Exact int64 NCHW conv2d of ``x`` (C, H, W) with ``w`` (O, C, K, K): (1, O, OH, OW)."""
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    out = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows[:, : out[0], : out[1]], w.astype(np.int64))[None]


def _int8_kernels(mod, name: str) -> dict[str, tvm.tirx.PrimFunc]:
    """The scheduled PrimFuncs of ``mod`` (pair kernels on) whose name holds ``name``."""
    return {k: f for k, f in _scheduled_kernels(mod, pair_kernels=True).items() if name in k}


@needs_avx2
@pytest.mark.parametrize("floor", ["zero", "importer"])
@pytest.mark.parametrize("cin,cout,size", [(40, 16, 7), (144, 24, 14), (16, 8, 12)])
def test_quad_kernel_on_nonnegative_codes_is_exact(cin, cout, size, floor):
    """A pointwise conv whose int8 input cannot be negative runs as uint8 x int8 quads (vpmaddubsw): exact,
    the largest pair sums (127 * 127 * 2 and 127 * -128 * 2) included."""
    rng = np.random.default_rng(cin * cout)
    x = rng.integers(-127, 128, (1, cin, size, size)).astype(np.int8)
    w = rng.integers(-128, 128, (cout, cin, 1, 1)).astype(np.int8)
    x[0, :, :2, :2], w[0], w[1] = 127, 127, -128
    mod = _relu_pointwise_module(cin, cout, size, w, floor)
    kernels = _int8_kernels(mod, QUAD_CONV)
    assert (
        len(kernels) == 1
        and kernels
        and all(f.attrs.get("tirx.is_scheduled", False) for f in kernels.values())
    )
    assert x86_int8.instructions(host.tvm_target())[4][0] in next(iter(kernels.values())).script()
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    relu = np.maximum(x[0].astype(np.int64), 0)
    want = np.einsum("chw,oc->ohw", relu, w[:, :, 0, 0].astype(np.int64))[None]
    np.testing.assert_array_equal(got, want.astype(np.int32))


@needs_avx2
def test_signed_codes_stay_on_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("HANASC_INT8_VNNI", "0")  # without VNNI signed codes need int16 pairs
    w = np.random.default_rng(4).integers(-127, 128, (16, 32, 1, 1)).astype(np.int8)
    mod = _relu_pointwise_module(32, 16, 8, w, "negative")
    assert not _int8_kernels(mod, QUAD_CONV) and len(_int8_kernels(mod, PAIR_CONV)) == 1
    objdump = shutil.which("objdump")
    if objdump:  # and the quad kernel's library really runs vpmaddubsw (vpdpbusd with AVX512-VNNI)
        lib = tmp_path / "quad.so"
        quad = _relu_pointwise_module(32, 16, 8, w, "zero")
        compile_late_bound(quad, host.tvm_target()).export_library(str(lib))
        assembly = subprocess.run(
            [objdump, "-d", str(lib)], capture_output=True, text=True, check=True
        ).stdout
        assert x86_int8.instructions(host.tvm_target())[4][1] in assembly


VNNI_CPU = {"kind": "llvm", "mcpu": "icelake-server"}  # AVX512-VNNI with VL; compiled for, not run


def test_vnni_cpus_get_vpdp_kernels(tmp_path):
    """For an AVX512-VNNI CPU the pair and quad kernels accumulate with vpdpwssd / vpdpbusd (checked in the
    scheduled TIR and the assembly of a library built for it, on any x86 host); without VNNI, AVX2 ones."""
    vnni = tvm.target.Target(VNNI_CPU)
    assert isa.supports_vnni(vnni)
    assert not isa.supports_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"}))
    assert x86_int8.instructions(vnni) == {
        2: ("llvm.x86.avx512.vpdpwssd.256", "vpdpwssd"),
        4: ("llvm.x86.avx512.vpdpbusd.256", "vpdpbusd"),
    }
    w = np.random.default_rng(5).integers(-127, 128, (16, 32, 1, 1)).astype(np.int8)
    assert x86_int8.dot_lanes(vnni, 16) == 16 and x86_int8.dot_lanes(vnni, 8) == 8  # zmm: 16-channel blocks
    for floor, group in (("negative", 2), ("zero", 4)):
        mod = _relu_pointwise_module(32, 16, 8, w, floor)
        llvm_name = x86_int8.instructions(vnni, 16)[group][0]
        kernels = _scheduled_kernels(mod, pair_kernels=True, target=vnni)
        assert any(llvm_name in f.script() for f in kernels.values())
    # the build knows the int8 weights: signed codes run as quads too (vpdpbusd on codes + 128)
    signed = _relu_pointwise_module(32, 16, 8, w, "negative")
    kernels = _scheduled_kernels(signed, pair_kernels=True, target=vnni, signed_weights={"w": w})
    assert [name for name in kernels if QUAD_CONV in name] and not [n for n in kernels if PAIR_CONV in n]
    objdump = shutil.which("objdump")
    if objdump:
        lib = tmp_path / "vnni.so"
        compile_late_bound(signed, vnni).export_library(str(lib))
        assembly = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True).stdout
        assert "vpdpbusd" in assembly and "vpmaddwd" not in assembly


def test_avx512_cpus_tile_twice_the_pixels():
    """With AVX-512's 32 vector registers the dot-product tile holds 16 accumulators (8 pixels of a
    16-channel block), with AVX2's 16 registers 8 (4 pixels)."""
    w = np.random.default_rng(6).integers(-127, 128, (32, 32, 1, 1)).astype(np.int8)
    mod = _relu_pointwise_module(32, 32, 16, w, "zero")
    for mcpu, pixels in (("icelake-server", 8), ("znver3", 4)):
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
        assert x86_int8.accumulators(target) == {8: 16, 4: 8}[pixels]
        (kernel,) = [f for n, f in _scheduled_kernels(mod, True, target).items() if QUAD_CONV in n]
        assert f"T.unroll(T.int64({pixels}))" in kernel.script()


@needs_avx2
@pytest.mark.parametrize("vnni", ["1", "0"])
@pytest.mark.parametrize("floor", ["zero", "negative"])
@pytest.mark.parametrize("window,stride,pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (3, 1, 0)])
def test_vnni_and_avx2_kernels_agree_exactly(monkeypatch, vnni, floor, window, stride, pad):
    """Both instruction paths give numpy's exact sums, extremes included, for pointwise and KxK convs
    (strided, padded or not): non-negative codes as quads; signed codes as int16 pairs without VNNI, as
    quads on codes + 128 with it, except when padded (the shifted zero border would be wrong: pairs). On a
    CPU without AVX512-VNNI the VNNI case runs the AVX2 path."""
    monkeypatch.setenv("HANASC_INT8_VNNI", vnni)
    rng = np.random.default_rng(11 + window)
    x = rng.integers(-127, 128, (1, 48, 9, 9)).astype(np.int8)
    w = rng.integers(-128, 128, (24, 48, window, window)).astype(np.int8)
    x[0, :, :3, :3], w[0], w[1] = 127, 127, -128
    conv = {"strides": stride, "padding": pad}
    mod = _relu_pointwise_module(48, 24, 9, w, floor, **conv)
    quads = isa.supports_vnni(host.tvm_target())  # read with HANASC_INT8_VNNI set
    signed = floor == "negative" and (pad or not quads)
    kernels = _scheduled_kernels(mod, pair_kernels=True, signed_weights={"w": w} if quads else None)
    assert [name for name in kernels if (PAIR_CONV if signed else QUAD_CONV) in name]
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    data = np.maximum(x[0].astype(np.int64), 0 if floor == "zero" else -1)
    np.testing.assert_array_equal(got, _conv_reference(data, w, stride, pad).astype(np.int32))


@needs_avx2
@pytest.mark.parametrize("window,stride,pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1)])
def test_dot_convs_at_prime_widths_compute_whole_tiles(window, stride, pad):
    """Output width 13 (or 7 strided): no divisor makes a 4-pixel tile, so the kernel computes 16 columns
    (two 8-pixel tiles, the extra ones reading extra right padding) and cuts them off before the epilogue;
    the values stay numpy's exact sums and nothing is written past the row."""
    rng = np.random.default_rng(13 + window)
    x = rng.integers(-127, 128, (1, 32, 13, 13)).astype(np.int8)
    w = rng.integers(-128, 128, (16, 32, window, window)).astype(np.int8)
    mod = _relu_pointwise_module(32, 16, 13, w, "zero", strides=stride, padding=pad)
    (kernel,) = _int8_kernels(mod, QUAD_CONV).values()
    width = (13 + 2 * pad - window) // stride + 1
    assert (DOT_CROP in kernel.script()) == (dot_conv_width(width) != width)
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    want = _conv_reference(np.maximum(x[0], 0), w, stride, pad)
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_pair_kernels_only_on_x86_avx2():
    a78 = tvm.target.Target(
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78", "mattr": ["+neon", "+dotprod"]}
    )
    assert not supports_pair_kernels(a78)
    assert not supports_pair_kernels(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"}))  # SSE2 only


class MixedNet(nn.Module):
    """fp32 stem and depthwise, int8 pointwise convs (32 -> 48 and 48 -> 32 with a residual add)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.expand = nn.Conv2d(32, 48, 1)
        self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48)
        self.project = nn.Conv2d(48, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.stem(x), 0.0, 6.0)
        z = torch.clamp(self.dw(torch.clamp(self.expand(y), 0.0, 6.0)), 0.0, 6.0)
        y = y + self.project(z)
        return self.fc(y.mean((2, 3)))


@needs_avx2
def test_mixed_int8_fp32_model_with_pair_kernels_matches_fake_quantized(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "mixed.onnx"
    shape = (1, 3, 16, 16)
    loaded, ranges, rng = _load_calibrated(export_module(MixedNet().eval(), shape, path), shape)
    int8 = [layer.name for layer in loaded.layers if "expand" in layer.name or "project" in layer.name]
    assert len(int8) == 2
    config = Config(layers={name: LayerChoice(w_bits=8, a_bits=8) for name in int8})
    quantized = QuantizeLayers(config, ranges)(loaded.mod)
    assert len(_pair_kernels(quantized)) == 2
    x = rng.standard_normal(shape).astype(np.float32)
    real = host.run(host.build_artifact(quantized), [x])[0]
    fake = host.run(host.build(bind_weights(FakeQuantizeLayers(config, ranges)(loaded.mod))), [x])[0]
    fp32 = host.run(host.build(bind_weights(loaded.mod)), [x])[0]
    scale = np.abs(fake).max()
    assert np.abs(real - fake).max() <= 2e-3 * scale
    assert np.abs(real - fp32).max() > 1e-4 * scale  # it really is quantized


class DepthwiseNet(nn.Module):
    """Depthwise convs with padding at stride 1 and 2 (3x3 and 5x5), pointwise convs, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw1 = nn.Conv2d(16, 32, 1)
        self.dw2 = nn.Conv2d(32, 32, 5, stride=2, padding=2, groups=32)
        self.pw2 = nn.Conv2d(32, 24, 1)
        self.fc = nn.Linear(24, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.stem(x), 0.0, 6.0)
        y = torch.clamp(self.pw1(torch.clamp(self.dw1(y), 0.0, 6.0)), 0.0, 6.0)
        y = self.pw2(torch.clamp(self.dw2(y), 0.0, 6.0))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("bits", [None, 8])
def test_every_conv_and_matmul_kernel_gets_a_schedule(tmp_path, bits):
    """A rule that raises on a kernel leaves it as a naive loop nest, silently and 3-5x slower: every
    convolution and matmul of a MobileNet-style net must come out scheduled, fp32 and W8A8."""
    torch.manual_seed(0)
    path = export_module(DepthwiseNet().eval(), SHAPE, tmp_path / "dw.onnx")
    loaded, ranges, _ = _load_calibrated(path, SHAPE)
    mod = loaded.mod
    if bits:
        config = Config(layers={layer.name: LayerChoice(w_bits=bits, a_bits=8) for layer in loaded.layers})
        mod = QuantizeLayers(config, ranges)(mod)
    kernels = _scheduled_kernels(mod)
    layers = {name: f for name, f in kernels.items() if "conv2d" in name or "matmul" in name}
    assert len(layers) == 6
    unscheduled = [name for name, f in layers.items() if not f.attrs.get("tirx.is_scheduled", False)]
    assert unscheduled == []
    # the global pool before the classifier too (ChannelBlockReduction), and every other kernel
    assert any("mean" in name for name in kernels)
    assert [name for name, f in kernels.items() if not f.attrs.get("tirx.is_scheduled", False)] == []
    depthwise = [f.script() for f in layers.values() if "depthwise_conv2d_nchwc" in f.script()]
    assert len(depthwise) == 2
    if not bits:  # fp32 depthwise reads its input in place: no padded copy
        assert all('sblock("pad' not in script for script in depthwise)


@pytest.mark.parametrize("bits", [None, 8])
def test_squeeze_excite_scale_is_scheduled_and_exact(tmp_path, bits):
    """Squeeze-excite fuses its expand conv (on the pooled 1x1 vector) with the scale over the whole map:
    that kernel must come out scheduled (it was a naive loop nest, 20x slower), and compute what the
    reference computes (onnxruntime for fp32, the fake-quantized graph for W8A8)."""
    torch.manual_seed(0)
    path = export_module(SqueezeExciteHardswish(channels=64).eval(), SHAPE, tmp_path / "se.onnx")
    loaded, ranges, _ = _load_calibrated(path, SHAPE)
    mod, reference = loaded.mod, None
    if bits:
        config = Config(layers={layer.name: LayerChoice(w_bits=bits, a_bits=8) for layer in loaded.layers})
        mod = QuantizeLayers(config, ranges)(loaded.mod)
        reference = bind_weights(FakeQuantizeLayers(config, ranges)(loaded.mod))
    convs = {k: f for k, f in _scheduled_kernels(mod, pair_kernels=True).items() if "conv2d" in k}
    assert len(convs) == 4
    assert [name for name, f in convs.items() if not f.attrs.get("tirx.is_scheduled", False)] == []
    x = _input()
    got = host.run(host.build_artifact(mod), [x])[0]
    if reference is None:
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    else:
        want = host.run(host.build(reference), [x])[0]
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()


def _dense_module(rows: int, k: int, w: np.ndarray, relu: bool, transposed: bool = False):
    """``x @ w`` (int8 x int8 -> int32) on an int8 activation, through a ReLU when ``relu``; with
    ``transposed`` the parameter is ``w.T`` read through ``permute_dims`` (ONNX Gemm, transB=1)."""
    bb = relax.BlockBuilder()
    stored = np.ascontiguousarray(w.T) if transposed else w
    xv = relax.Var("x", relax.TensorType((rows, k), "int8"))
    wv = relax.Var("w", relax.TensorType(stored.shape, "int8"))
    with bb.function("main", [xv, wv], attrs={"num_input": 1}):
        with bb.dataflow():
            data = bb.emit(relax.op.maximum(xv, relax.const(0, "int8"))) if relu else xv
            weight = bb.emit(relax.op.permute_dims(wv, [1, 0])) if transposed else wv
            y = bb.emit_output(relax.op.matmul(data, weight, out_dtype="int32"))
        bb.emit_func_output(y)
    return _with_params(bb.get(), {"w": stored})


@needs_avx2
@pytest.mark.parametrize("relu,kernel,transposed", [(True, QUAD_CONV, True), (False, PAIR_CONV, False)])
@pytest.mark.parametrize("rows,k,n", [(1, 1280, 1000), (2, 64, 24)])
def test_int8_dense_runs_as_dot_conv_and_is_exact(rows, k, n, relu, kernel, transposed):
    """An int8 classifier (x @ W, W as (K, N) or read through a transpose) is a 1x1 quad (pair) conv on the
    dot-product intrinsics, its weight prepacked once (no layout op left on a parameter), exact on the
    extremes; no widened int32 matmul is left."""
    rng = np.random.default_rng(k + n)
    x = rng.integers(-127, 128, (rows, k)).astype(np.int8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    x[0, :8], w[:8, 0], w[:8, 1] = 127, 127, -128
    mod = _dense_module(rows, k, w, relu, transposed)
    kernels = _scheduled_kernels(mod, pair_kernels=True)
    assert [name for name in kernels if kernel in name] and not [name for name in kernels if "matmul" in name]
    packed = {name: v for name, v in weights_of(mod).items() if is_packed(v)}
    early = convert_to_blocked(bind_weights(mod, keep_packed=True), pair_kernels=True)
    prepacked, _ = prepack_weights(early, packed)
    for binding in prepacked["main"].body.blocks[0].bindings:  # nothing rearranges the 2-D weight per run
        value = binding.value
        if isinstance(value, relax.Call) and value.op.name in (
            "relax.layout_transform",
            "relax.permute_dims",
        ):
            assert len(value.args[0].ty.shape) != 2, value.op.name
    got = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    data = np.maximum(x, 0) if relu else x
    np.testing.assert_array_equal(got, (data.astype(np.int64) @ w.astype(np.int64)).astype(np.int32))
