"""Bad input: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
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
    path = conv_with_external_weight(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.ones((4, 3, 3, 3), np.float32).tobytes())
    result = run_cli("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr


def test_unknown_zoo_model_or_command():
    result = run_cli("models", "fetch", "resnet-9000")
    assert_one_line_error(result, "resnet-9000", "efficientnet-lite0")


# --- validation at the input boundary (in-process: each refusal is a HanascError naming file and tensor) ---


def _fixture(tmp_path, mutate=None, name="m.onnx"):
    from fuzzing.fuzz_fixtures import residual_fixture

    model = residual_fixture()
    if mutate:
        mutate(model)
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _refused(path, *needles, shapes=None, error=None):
    import hanasc
    from hanasc.core.errors import HanascError

    with pytest.raises(error or HanascError) as info:
        hanasc.load_model(path, shapes, import_tvm=False)
    message = str(info.value)
    assert "\n" not in message
    for needle in (path.name, *needles):
        assert needle in message, message
    return message


def _no_cleaning(monkeypatch):
    """Cleaning constant-folds (allocates): a refusal 'before any allocation' must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError("the graph was cleaned (constants folded) before the size check")

    monkeypatch.setattr("hanasc.frontend.loading.clean", fail)


@pytest.mark.parametrize("dim", [2**31, 2**40, 2**62])
def test_huge_declared_input_refused_before_allocation(tmp_path, monkeypatch, dim):
    from hanasc.core.errors import ModelSizeError

    def mutate(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = dim

    _no_cleaning(monkeypatch)
    _refused(
        _fixture(tmp_path, mutate), "'input'", "elements", "HANASC_MAX_TENSOR_ELEMENTS", error=ModelSizeError
    )


def test_huge_computed_tensor_refused_before_folding(tmp_path, monkeypatch):
    from onnx import helper, numpy_helper

    from hanasc.core.errors import ModelSizeError

    def mutate(model):
        g = model.graph
        g.initializer.append(numpy_helper.from_array(np.array([2**31, 1024], np.int64), "big_shape"))
        g.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="make_big"))
        g.node.append(helper.make_node("ReduceMax", ["big"], ["big_max"], name="reduce", keepdims=0))
        g.output.append(helper.make_tensor_value_info("big_max", onnx.TensorProto.FLOAT, []))

    _no_cleaning(monkeypatch)
    _refused(_fixture(tmp_path, mutate), "'big'", "'make_big'", error=ModelSizeError)


def test_huge_initializer_dims_refused(tmp_path):
    def mutate(model):
        model.graph.initializer[0].dims[0] = 2**40

    _refused(_fixture(tmp_path, mutate), "'stem.w'", "elements")


def test_initializer_data_not_matching_its_shape(tmp_path):
    def mutate(model):
        model.graph.initializer[0].dims[:] = [5, 5]

    _refused(_fixture(tmp_path, mutate), "'stem.w'", "holds 216 values")


def test_huge_input_shape_option_refused(tmp_path):
    from hanasc.frontend.onnx_loader import parse_input_shape

    with pytest.raises(hanasc_error()) as info:
        parse_input_shape("input=99999999999999999999x3x16x16")
    assert "--input-shape" in str(info.value) and "HANASC_MAX_TENSOR_ELEMENTS" in str(info.value)


def hanasc_error():
    from hanasc.core.errors import HanascError

    return HanascError


def test_size_limit_can_be_raised_or_lowered(tmp_path, monkeypatch):
    monkeypatch.setenv("HANASC_MAX_TENSOR_ELEMENTS", "100")
    _refused(_fixture(tmp_path), "more than the limit of 100")


@pytest.mark.parametrize("version", [1, 6, 24, 99])
def test_opset_out_of_range(tmp_path, version):
    def mutate(model):
        model.opset_import[0].version = version

    _refused(_fixture(tmp_path, mutate), f"opset {version} is not supported")


def test_no_default_opset(tmp_path):
    def mutate(model):
        del model.opset_import[:]

    _refused(_fixture(tmp_path, mutate), "no default-domain")


@pytest.mark.parametrize("elem_type", [0, 8, 99])
def test_input_type_not_numeric(tmp_path, elem_type):
    def mutate(model):
        model.graph.input[0].type.tensor_type.elem_type = elem_type

    _refused(_fixture(tmp_path, mutate), "'input'")


def test_cycle_refused(tmp_path):
    def mutate(model):
        model.graph.node[0].input[0] = model.graph.node[3].output[0]

    _refused(_fixture(tmp_path, mutate), "invalid ONNX model")


def test_dangling_and_duplicate_names_refused(tmp_path):
    def dangling(model):
        model.graph.node[2].input[0] = "ghost"

    def duplicate(model):
        model.graph.node[3].output[0] = model.graph.node[1].output[0]

    _refused(_fixture(tmp_path, dangling, "a.onnx"), "ghost")
    _refused(_fixture(tmp_path, duplicate, "b.onnx"), "invalid ONNX model")


def test_missing_initializer_refused(tmp_path):
    def mutate(model):
        del model.graph.initializer[2]

    _refused(_fixture(tmp_path, mutate), "dw.w")


def test_no_outputs_and_duplicate_inputs_refused(tmp_path):
    def no_outputs(model):
        del model.graph.output[:]

    def twice(model):
        model.graph.input.append(model.graph.input[0])

    _refused(_fixture(tmp_path, no_outputs, "a.onnx"))
    _refused(_fixture(tmp_path, twice, "b.onnx"), "input")


@pytest.mark.parametrize(
    "value", ["not json", "[1, 2]", '{"mean": "abc"}', '{"resize": -5}', '{"std": [0, 1, 1]}']
)
def test_malformed_hanasc_metadata(tmp_path, value):
    def mutate(model):
        entry = model.metadata_props.add()
        entry.key, entry.value = "hanasc.preprocess", value

    _refused(_fixture(tmp_path, mutate), "hanasc.preprocess")


def _external(tmp_path, data: bytes | None, **entries):
    """The fixture with 'fc.w' (10x8 float32 = 320 bytes) stored as external data."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)

    def mutate(model):
        init = next(i for i in model.graph.initializer if i.name == "fc.w")
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        for key, value in {"location": "w.bin", **entries}.items():
            e = init.external_data.add()
            e.key, e.value = key, value

    if data is not None:
        (folder / "w.bin").write_bytes(data)
    return _fixture(folder, mutate)


def test_external_data_short_file_or_bad_offset(tmp_path):
    _refused(_external(tmp_path, b"\0" * 100), "'fc.w'", "'w.bin'", "which has 100")
    _refused(_external(tmp_path, b"\0" * 320, offset="300"), "'fc.w'", "which has 320")
    _refused(_external(tmp_path, b"\0" * 320, offset="-8"), "'fc.w'", "offset '-8'")
    _refused(_external(tmp_path, b"\0" * 320, length="4"), "'fc.w'", "length 4")


def test_external_data_directory_empty_or_symlink_escape(tmp_path):
    _refused(_external(tmp_path, None, location=""), "names no data file")
    (tmp_path / "model" / "adir").mkdir()
    _refused(_external(tmp_path, None, location="adir"), "not a file")
    (tmp_path / "secret.bin").write_bytes(b"\0" * 320)
    (tmp_path / "model" / "link.bin").symlink_to(tmp_path / "secret.bin")
    _refused(_external(tmp_path, None, location="link.bin"), "outside the model's folder")


def test_external_data_good_loads(tmp_path):
    import hanasc

    values = np.arange(80, dtype=np.float32)
    loaded = hanasc.load_model(_external(tmp_path, values.tobytes()), import_tvm=False)
    dense = [layer for layer in loaded.layers if layer.op == "dense"]
    np.testing.assert_array_equal(loaded.weights()[dense[0].weight].ravel(), values)


def test_importer_failure_names_the_node(tmp_path):
    import hanasc

    def mutate(model):
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5  # conv weights take 3 channels

    path = _fixture(tmp_path, mutate)
    with pytest.raises(hanasc_error()) as info:
        hanasc.load_model(path)
    assert "at node 'stem' (Conv)" in str(info.value) and path.name in str(info.value)


def test_symbolic_spatial_dims_hint(tmp_path):
    """[-1, 3, '?', '?']: suggest batch 1 and the declared 3, ask for H and W (never 1x1)."""

    def mutate(model):
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_value = -1
        dims[2].dim_param = "?"
        dims[3].dim_param = "?"

    message = _refused(_fixture(tmp_path, mutate), "--input-shape input=1x3xHxW", "H, W given", "batch 1")
    assert "1x3x1x1" not in message


def test_symbolic_batch_only_hint_is_runnable(tmp_path):
    def mutate(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"

    message = _refused(_fixture(tmp_path, mutate), "--input-shape input=1x3x16x16")
    assert "given" not in message


def test_unexpected_error_is_one_line_exit_1(monkeypatch, capsys):
    import sys

    from hanasc import cli

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("hanasc.api.options.load_model", broken)
    monkeypatch.setattr(sys, "argv", ["hanasc", "inspect", "model.onnx"])
    monkeypatch.delenv("HANASC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hanasc: internal error: RuntimeError: boom"), err
    assert "HANASC_DEBUG=1" in err[0]
    monkeypatch.setenv("HANASC_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main()


def test_labels_need_a_classifier_output(tmp_path):
    import hanasc
    from hanasc.core.errors import HanascError

    loaded = hanasc.load_model(_fixture(tmp_path), import_tvm=False)
    assert loaded.output_shapes() == {"output": (1, 10)}
    loaded.check_labels(np.arange(8) % 10, "d.npz")
    loaded.check_labels(np.array([0.0, 9.0]), "d.npz")
    for bad in (np.array([10]), np.array([-1]), np.array([0.5])):
        with pytest.raises(HanascError, match=r"d\.npz: labels \(y\) must be integers 0\.\.9"):
            loaded.check_labels(bad, "d.npz")


def test_compile_with_labels_on_a_dense_output_fails_before_the_search(tmp_path):
    """A model whose output is (1, C, H, W) cannot be scored by top-1 against labels: one line, at once
    (without --metric such a model is scored by fidelity)."""
    from onnx import helper

    def mutate(model):  # drop pool/flatten/dense: the output is the residual (1, 8, 16, 16)
        del model.graph.node[6:]
        model.graph.node[5].output[0] = "output"
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 8, 16, 16])
        )

    path = _fixture(tmp_path, mutate)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 3, 16, 16), np.float32), y=np.arange(4))
    out = tmp_path / "out"
    args = ["--data", str(data), "--out", str(out), "--budget", "100ms", "--metric", "top1"]
    result = run_cli("compile", str(path), *args)
    assert_one_line_error(result, "d.npz", "classifier output", "--metric fidelity")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_refused(tmp_path, value):
    from onnx import numpy_helper

    def mutate(model):
        init = model.graph.initializer[2]  # dw.w
        array = numpy_helper.to_array(init).copy()
        array.flat[4] = value
        init.CopyFrom(numpy_helper.from_array(array, init.name))

    _refused(_fixture(tmp_path, mutate), "'dw.w'", "1 NaN or infinite")


def test_overflowing_activations_refused_before_the_search(tmp_path):
    from onnx import numpy_helper

    import hanasc
    from hanasc.core.errors import HanascError

    def mutate(model):
        init = model.graph.initializer[0]  # stem.w: finite, but the conv overflows float32
        init.CopyFrom(numpy_helper.from_array(np.full((8, 3, 3, 3), 3e38, np.float32), init.name))

    loaded = hanasc.load_model(_fixture(tmp_path, mutate), import_tvm=False)
    x = np.ones((2, 3, 16, 16), np.float32)
    with pytest.raises(HanascError, match=r"m\.onnx: tensor '\S+' \(node 'stem'\) overflows .* of d\.npz"):
        loaded.check_finite_activations(x, "d.npz")
    hanasc.load_model(_fixture(tmp_path), import_tvm=False).check_finite_activations(x, "d.npz")


def test_compile_of_a_non_classifier_is_refused_before_the_search(tmp_path):
    """Every metric compares class scores: a dense (N, C, H, W) output is refused in one line (exit 2)."""
    model = single_op_model("Relu", tmp_path / "dense.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 4, 8, 8)).astype(np.float32))
    out = tmp_path / "out"
    result = run_cli("compile", str(model), "--data", str(data), "--metric", "kl", "--out", str(out))
    assert_one_line_error(result, "--metric kl", "(batch, classes")
    assert not out.exists()


def test_negative_declared_output_dim_is_dynamic_not_an_error(tmp_path):
    """Paddle exports declare dynamic dims as -1 (e.g. PP-OCR's classifier output [-1, 2])."""
    path = single_op_model("Relu", tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.save(model, str(path))
    result = run_cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
