"""Inputs as users hold them (issue 34, item 5): an .npz keyed by the model's input names (every input of a
multi-input model), or a one-input model's single array whatever its key, besides x / y; one rule for
--data, apply --data, costs --data and calibration files; a wrong key is one line naming the file, the
arrays found and the inputs expected (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from test_bad_input import assert_one_line_error
from test_python_api import tiny_model

import hanasc
from hanasc.api.data import load_data, preprocess_for
from hanasc.frontend.calibration import calibrate, load_calibration_data
from hanasc.frontend.datasets import DataError, load_npz

RNG = np.random.default_rng(0)


def samples(n: int, channels: int) -> np.ndarray:
    return RNG.standard_normal((n, channels, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return hanasc.load_model(tiny_model(tmp_path_factory.mktemp("one") / "one.onnx"))


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    path = tiny_model(tmp_path_factory.mktemp("two") / "two.onnx", {"left": 3, "right": 2})
    return hanasc.load_model(path)


def test_an_npz_keyed_by_the_input_name_is_accepted(one, tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, image=samples(6, 3), y=np.arange(6) % 10)
    ds = load_npz(path, one.inputs)
    assert ds.x.shape == (6, 3, 16, 16) and list(ds.y) == [0, 1, 2, 3, 4, 5]
    # the compile's data path reads it the same way
    data = load_data(one, str(path), preprocess_for(one, None, None, None, None, "RGB", 1))
    assert data.x.shape == (6, 3, 16, 16) and data.y is not None


@pytest.mark.parametrize("key", ["x", "images", "input_0"])
def test_a_one_input_model_takes_its_single_array_whatever_its_key(one, tmp_path, key):
    path = tmp_path / "d.npz"
    np.savez(path, **{key: samples(4, 3)}, y=np.zeros(4, np.int64))
    ds = load_npz(path, one.inputs)
    assert ds.x.shape == (4, 3, 16, 16) and ds.y is not None
    assert list(ds.feeds(one.inputs)) == ["image"]


def test_a_two_input_npz_is_accepted_and_calibrates(two, tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, left=samples(8, 3), right=samples(8, 2))
    ds = load_npz(path, two.inputs)
    assert {k: v.shape[1] for k, v in ds.feeds(two.inputs).items()} == {"left": 3, "right": 2}
    # the calibration the compile and apply run, on both inputs
    ranges = calibrate(two, load_calibration_data(path, two))
    assert set(ranges.ranges) == {"conv_left", "conv_right", "conv_mid", "fc"} and ranges.samples == 8
    lo, hi = ranges.ranges["conv_right"]
    assert lo < 0 < hi


def test_a_two_input_npz_through_apply(two, tmp_path):
    data = tmp_path / "two.npz"
    np.savez(data, left=samples(8, 3), right=samples(8, 2))
    config = tmp_path / "c.json"
    layers = {name: {"w_bits": 8, "a_bits": 8} for name in ("conv_left", "conv_right", "fc")}
    config.write_text(json.dumps({"layers": layers, "skip": []}))
    out = tmp_path / "out"
    result = run_cli("apply", str(two.path), str(config), "--data", str(data), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "model.so").is_file() and (out / "activation_ranges.json").is_file()


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"a": 4, "b": 4}, ["'a', 'b'", "'image'"]),
        ({"y": 4}, ["found arrays 'y'", "'image'"]),
    ],
)
def test_wrong_keys_name_the_file_the_arrays_and_the_inputs(one, tmp_path, arrays, needles):
    path = tmp_path / "wrong.npz"
    np.savez(path, **{k: samples(n, 3) if k != "y" else np.zeros(n) for k, n in arrays.items()})
    with pytest.raises(DataError) as error:
        load_npz(path, one.inputs)
    message = str(error.value)
    assert message.startswith(str(path)) and "labels as 'y'" in message
    for needle in needles:
        assert needle in message, message


def test_a_two_input_npz_missing_one_input_is_refused(two, tmp_path):
    path = tmp_path / "half.npz"
    np.savez(path, left=samples(4, 3))
    with pytest.raises(DataError, match=r"found arrays 'left'; expected arrays 'left', 'right'"):
        load_npz(path, two.inputs)


def test_wrong_key_on_the_command_line_is_one_line_and_exit_2(one, tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, a=samples(4, 3), b=samples(4, 3))
    out = tmp_path / "out"
    result = run_cli("compile", str(one.path), "--data", str(path), "--out", str(out))
    assert_one_line_error(result, "wrong.npz", "found arrays 'a', 'b'", "expected an array 'image'")
    assert not out.exists()


def test_compile_refuses_a_two_input_model_in_one_line(two, tmp_path):
    data = tmp_path / "two.npz"
    np.savez(data, left=samples(4, 3), right=samples(4, 2))
    result = run_cli("compile", str(two.path), "--data", str(data), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "two.onnx", "2 inputs (left, right)", "one-input models")
