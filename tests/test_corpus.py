"""A subset of the model corpus (docs/corpus.md, bench/bench_corpus.py) through the CLI, as a user runs it:
the PP-OCR text-angle classifier of issue 15 (packaged weights, opset 11, 48x192, MaxPool between blocked
convolutions) and a small U-Net (random init; its ConvTranspose has no blocked layout rule and falls back)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

COMPILE = ["--budget", "2x", "--generations", "1", "--population", "4", "--samples", "8"]


def _hanasc(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "hanasc.cli", *args], capture_output=True, text=True, timeout=1500
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _model(name: str):
    from hanasc.frontend.model_zoo import fetch, get_zoo_model

    spec = get_zoo_model(name)
    shape = ["--input-shape", spec.shape_arg()] if spec.dynamic else []
    return spec, fetch(name), shape


@pytest.mark.parametrize(
    "name,kept_nchw,naive",
    # unet's up-convolution is a 1x1 conv (transposed_conv.py); ppocr-cls's softmax has no default schedule
    [("ppocr-cls", {}, ["softmax"]), ("unet-tiny", {}, [])],
)
def test_corpus_model_applies_and_matches_onnxruntime(name, kept_nchw, naive, tmp_path):
    import onnxruntime as ort
    import tvm
    from tvm import relax

    spec, path, shape = _model(name)
    (tmp_path / "empty.json").write_text('{"layers": {}, "skip": []}\n')
    done = _hanasc("apply", str(path), str(tmp_path / "empty.json"), "--out", str(tmp_path / "out"), *shape)
    build = json.loads((tmp_path / "out" / "summary.json").read_text())["build"]
    assert build["layout"]["kept_nchw"] == kept_nchw and not build["rebuilds"]
    assert build["naive_kernels"] == naive  # kernels without a schedule: named and counted
    assert build["fallback_kernels"] == len(naive) < build["kernels"]
    assert f"{build['fallback_kernels']} of {build['kernels']} kernels" in done.stdout
    x = np.random.default_rng(0).standard_normal(spec.input_shape).astype("float32")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "out" / "model.so")), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x))
    got = (got if hasattr(got, "numpy") else got[0]).numpy()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {spec.input_name: x}
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("target", ["host", "cortex-a78"])
def test_angle_classifier_compiles(target, tmp_path):
    """Issue 15's model: compile used to end in a traceback from the layout rewrite after the search."""
    spec, path, shape = _model("ppocr-cls")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((16, *spec.input_shape[1:])).astype("float32"))
    out = tmp_path / "out"
    done = _hanasc(
        "compile", str(path), "--target", target, *COMPILE, "--data", str(data), "--out", str(out), *shape
    )
    assert "kernels without a schedule" in done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == target
