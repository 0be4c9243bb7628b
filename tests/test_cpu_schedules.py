"""The CPU lowering choices that depend on the target's registers, and the row-matmul (classifier) rule:
outputs against numpy, schedules by inspection."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from hanasc.targets import cortex_a78, host, isa, pipelines
from hanasc.targets.cpu_nonconv_schedules import RowMatmul


def _x86(mcpu: str):
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "mtriple": "x86_64-linux-gnu"})


def test_layout_blocks_follow_the_register_file():
    # AVX2: 16 ymm registers of 8 floats, so a 16-channel tile of 8 pixels (16 accumulators) spills
    assert isa.vector_registers(_x86("haswell")) == (8, 16)
    assert pipelines.layout_blocks(_x86("haswell")) == (8, 4, 2)
    assert pipelines.layout_blocks(_x86("skylake-avx512")) == (16, 8, 4, 2)
    assert isa.vector_registers(cortex_a78.tvm_target()) == (4, 32)
    assert pipelines.layout_blocks(cortex_a78.tvm_target()) == (8, 4, 2)


def _row_matmul_module(rows: int, k: int, n: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        w = rng.integers(-127, 128, (k, n)).astype("int8")
    else:
        w = rng.standard_normal((k, n)).astype("float32")
    bias = rng.standard_normal(n).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, k), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.matmul(x, relax.const(w), out_dtype="int32" if dtype == "int8" else "float32")
            )
            if dtype == "int8":
                y = bb.emit(relax.op.astype(y, "float32"))
            out = bb.emit_output(relax.op.add(y, relax.const(bias)))
        bb.emit_func_output(out)
    return bb.get(), w, bias


def _fused_matmul(mod, target):
    with target:
        fused = tvm.transform.Sequential(pipelines.fused_passes(target))(mod)
    (func,) = [f for gv, f in fused.functions.items() if "matmul" in gv.name_hint]
    return func


@pytest.mark.parametrize(
    ("rows", "k", "n", "dtype"),
    [
        (1, 96, 40, "float32"),
        (2, 64, 24, "int8"),
        (1, 33, 48, "int8"),
        (1, 200, 2, "float32"),
        (40, 24, 125, "float32"),  # a sequence head: tiles of 4 rows, 5-lane vectors (125 = 5^3)
        (16, 32, 24, "int8"),
        (1, 32, 30, "float32"),  # 30 classes: 5-lane vectors on AVX-512 (6 with AVX2's 8 lanes)
    ],
)
def test_row_matmul_is_scheduled_and_exact(rows, k, n, dtype):
    mod, w, bias = _row_matmul_module(rows, k, n, dtype)
    target = host.tvm_target()
    with target:
        scheduled = RowMatmul().apply(_fused_matmul(mod, target), target, False)
    assert scheduled is not None
    script = scheduled.mod.script()
    assert "T.vectorized" in script and "local" in script  # a register tile along N
    rng = np.random.default_rng(1)
    if dtype == "int8":
        x = rng.integers(-127, 128, (rows, k)).astype("int8")
        want = (x.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) + bias
    else:
        x = rng.standard_normal((rows, k)).astype("float32")
        want = x @ w + bias
    got = host.run(host.build_artifact(mod), [x])[0]
    tolerance = 0 if dtype == "int8" else 1e-4
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=tolerance)


def test_row_matmul_takes_half_vectors_for_widths_the_register_does_not_divide():
    """1000 classes on AVX-512 (16 lanes): 8-lane vectors, not the naive loop nest (measured on
    EfficientNet-Lite0's classifier, 1 thread, Zen 4: 1.77 -> 0.46 ms)."""
    mod, _, _ = _row_matmul_module(1, 64, 1000, "float32")
    target = _x86("skylake-avx512")
    with target:
        scheduled = RowMatmul().apply(_fused_matmul(mod, target), target, False)
    assert scheduled is not None and "T.vectorized" in scheduled.mod.script()


def test_row_matmul_leaves_other_forms():
    target = host.tvm_target()
    prime, _, _ = _row_matmul_module(1, 32, 31, "float32")  # no vector of 4 or more lanes divides 31
    with target:
        assert RowMatmul().apply(_fused_matmul(prime, target), target, False) is None


def test_prime_widths_take_full_tiles_with_a_cut_short_last_one():
    from hanasc.targets.cpu_schedules import float_conv_tile, x_tile

    assert (x_tile(13), float_conv_tile(13)) == (1, 8)  # SqueezeNet's 13x13 stage: 8 pixels a tile
    assert (x_tile(26), float_conv_tile(26)) == (2, 8)
    assert float_conv_tile(56) == 8 and float_conv_tile(14) == 7 and float_conv_tile(5) == 5  # divisors kept


def test_prime_widths_take_whole_rows_where_the_registers_hold_them():
    """AVX-512 (16 lanes, 32 registers): a 13-pixel row of a 16-channel block is one tile (13 accumulators);
    AVX2 (8 lanes, 16 registers) cannot hold it; widths with good divisors, or wider than half the register
    file, keep their tiles. (Outputs at widths 11 and 13: the onnxruntime test below.)"""
    from hanasc.targets.cpu_schedules import _row_tile

    assert _row_tile(13, 16, 8, (16, 32)) == 13 and _row_tile(11, 8, 8, (16, 32)) == 11
    assert _row_tile(13, 16, 8, (8, 16)) is None  # 26 ymm accumulators
    assert _row_tile(27, 16, 8, (16, 32)) is None and _row_tile(14, 16, 8, (16, 32)) is None


@pytest.mark.parametrize("width", [11, 13])
def test_convs_at_prime_widths_match_onnxruntime(tmp_path, width):
    """fp32 3x3, 1x1 and depthwise convs whose output width no tile divides (the predicated last tile)."""
    import onnxruntime as ort
    import torch
    from builders import export_module

    import hanasc

    stack = torch.nn.Sequential(
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 16, 1),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
    )
    path = export_module(stack.eval(), (1, 16, width, width), tmp_path / "stack.onnx")
    x = np.random.default_rng(width).standard_normal((1, 16, width, width)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = host.run(host.build_artifact(hanasc.load_model(path).mod), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_nchw_max_pool_after_an_rgb_stem_is_scheduled(tmp_path):
    """The RGB stem stays NCHW, so the max pool after it does too: it vectorizes along the output row
    (ResNet's, ShuffleNet's and SqueezeNet's were naive loop nests) and matches onnxruntime."""
    import torch

    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
    path, mod, fused = _rgb_net(stem, tmp_path, "stem.onnx")
    pools = [f for gv, f in fused.functions.items() if "max_pool" in gv.name_hint]
    assert pools and all(f.attrs.get("tirx.is_scheduled", False) for f in pools)
    assert all("T.vectorized" in f.script() for f in pools)
    _matches_onnxruntime(path, mod)


def test_rgb_stem_writes_back_along_whole_rows(tmp_path):
    """An NCHW conv computed in output-channel blocks (3 input channels) copies its row back to NCHW with
    contiguous vector stores: per 4-pixel tile it had stored one byte or float per channel plane (a 1x1
    3 -> 16 conv at 64x64: 200 us instead of 30). Exact against onnxruntime."""
    import torch

    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU6())
    path, mod, fused = _rgb_net(stem, tmp_path, "stem1x1.onnx")
    (stem_func,) = [f for gv, f in fused.functions.items() if "oblocked" in gv.name_hint]
    script = stem_func.script()
    # the write-back's pixel index runs along the whole 64-pixel row, 16 lanes a vector (per tile: x*4+i)
    assert re.search(r"T\.axis\.spatial\(T\.int64\(64\), \w+ \* T\.int64\(16\) \+ \w+\)", script), script
    _matches_onnxruntime(path, mod)


def test_nchw_depthwise_conv_is_not_taken_for_a_pool(tmp_path):
    """A depthwise conv over RGB channels stays NCHW (no channel block): the pool rule's row vector, with
    its border select per lane, is not for it (LLVM's own loop was 10x faster); still exact."""
    import torch

    from hanasc.targets.cpu_nonconv_schedules import ChannelBlockReduction

    conv = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3)
    path, mod, fused = _rgb_net(conv, tmp_path, "rgb_dw.onnx", schedule=False)
    convs = [f for gv, f in fused.functions.items() if "conv2d" in gv.name_hint]
    target = host.tvm_target()
    assert convs
    with target:
        assert all(ChannelBlockReduction().apply(f, target, False) is None for f in convs)
    _matches_onnxruntime(path, mod)


def _rgb_net(net, tmp_path, name: str, schedule: bool = True):
    """``(path, module, fused kernels)`` of a torch net on a 1x3x64x64 input, lowered as shipped (and given
    the default schedules)."""
    from builders import export_module

    import hanasc
    from hanasc.targets.late_binding import fused_as_shipped

    path = export_module(net.eval(), (1, 3, 64, 64), tmp_path / name)
    mod = hanasc.load_model(path).mod
    target = host.tvm_target()
    fused = fused_as_shipped(mod, target)
    if schedule:
        with target:
            fused = tvm.transform.Sequential(pipelines.default_schedule_passes(target))(fused)
    return path, mod, fused


def _matches_onnxruntime(path, mod) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(host.run(host.build_artifact(mod), [x])[0], want, rtol=1e-5, atol=1e-5)
