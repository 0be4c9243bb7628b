"""Bad input: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import onnx
import pytest
from builders import conv_with_external_weight, single_op_model
from conftest import run_cli


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("hanasc: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("inspect", str(tmp_path / "nope.onnx")), "nope.onnx", "no such file")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are notes, not a model\n" * 20)
    assert_one_line_error(run_cli("inspect", str(path)), "notes.onnx", "not a readable ONNX model")


def test_truncated_onnx(tmp_path, test_models):
    data = test_models["plain_conv"].read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("inspect", str(path)), "truncated.onnx")


def test_unsupported_operator_names_op_and_node(tmp_path):
    path = single_op_model("Celu", tmp_path / "celu.onnx")
    assert_one_line_error(run_cli("inspect", str(path)), "'Celu'", "'my_celu'", "not supported")


def test_symbolic_shape_without_option(tmp_path):
    path = single_op_model("Relu", tmp_path / "sym.onnx")
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, path)
    assert_one_line_error(run_cli("inspect", str(path)), "'input'", "--input-shape input=1x4x8x8")
    ok = run_cli("inspect", str(path), "--input-shape", "input=2x4x8x8", "--json")
    assert ok.returncode == 0, ok.stderr


def test_input_shape_naming_unknown_input(test_models):
    result = run_cli("inspect", str(test_models["plain_conv"]), "--input-shape", "image=1x3x32x32")
    assert_one_line_error(result, "'image'", "input")


def test_malformed_input_shape(test_models):
    result = run_cli("inspect", str(test_models["plain_conv"]), "--input-shape", "input=1by3")
    assert_one_line_error(result, "input=1by3")


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd"])
def test_external_data_outside_model_folder(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 432)
    path = conv_with_external_weight(folder, location)
    assert_one_line_error(run_cli("inspect", str(path)), "'w'", "outside the model's folder")


def test_external_data_inside_folder_loads(tmp_path):
    import numpy as np

    path = conv_with_external_weight(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.ones((4, 3, 3, 3), np.float32).tobytes())
    result = run_cli("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr


def test_unknown_zoo_model_or_command():
    result = run_cli("models", "fetch", "resnet-9000")
    assert_one_line_error(result, "resnet-9000", "efficientnet-lite0")
