"""Transposed convolutions: the non-overlapping ones (kernel == stride) are built as a 1x1 conv and a
depth-to-space, the others as TVM lowers them; both compute what onnxruntime computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from builders import export_module

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.targets import host
from hanasc.targets.late_binding import fused_as_shipped
from hanasc.targets.lowering.transposed_conv import transposed_convs_as_convs


def _ops(mod) -> list[str]:
    names = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            op = getattr(binding.value, "op", None)
            names.append(getattr(op, "name", ""))
    return names


@pytest.mark.parametrize(
    "kernel,stride,padding,extra,shape,rewritten",
    [
        (2, 2, 0, 0, (1, 16, 6, 10), True),  # a U-Net's 2x up-convolution, non-square
        (4, 4, 0, 0, (1, 8, 3, 5), True),
        (3, 2, 1, 1, (1, 16, 6, 6), False),  # overlapping windows: TVM's own lowering
    ],
)
def test_transposed_convs_match_onnxruntime(tmp_path, kernel, stride, padding, extra, shape, rewritten):
    torch.manual_seed(kernel)
    up = torch.nn.ConvTranspose2d(shape[1], 8, kernel, stride, padding, output_padding=extra)
    path = export_module(torch.nn.Sequential(up, torch.nn.ReLU()).eval(), shape, tmp_path / "up.onnx")
    model = hanasc.load_model(path)
    ops = _ops(transposed_convs_as_convs(bind_weights(model.mod)))
    assert ("relax.nn.conv2d_transpose" not in ops) == rewritten
    assert ("relax.nn.conv2d" in ops) == rewritten
    kernels = [gv.name_hint for gv in fused_as_shipped(model.mod, host.tvm_target()).functions]
    assert any("conv2d_transpose" in name for name in kernels) != rewritten  # what the artifact runs
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = host.run(host.build_artifact(model.mod), [x])[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
