"""Read an ONNX file safely: validate it, resolve external data inside its folder, fix input shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hanasc.errors import InputShapeError, ModelFileError

_SHAPE_RE = re.compile(r"^(?P<name>[^=]+)=(?P<dims>\d+(?:[x,]\d+)*)$")


@dataclass(frozen=True)
class InputSpec:
    """One graph input with a fully static shape."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` (``,`` also separates dims) into a name and a shape."""
    match = _SHAPE_RE.match(text.strip())
    if not match:
        raise InputShapeError(f"--input-shape '{text}': expected NAME=DxDxD..., e.g. input=1x3x224x224")
    dims = tuple(int(d) for d in re.split(r"[x,]", match["dims"]))
    if any(d <= 0 for d in dims):
        raise InputShapeError(f"--input-shape '{text}': every dimension must be a positive integer")
    return match["name"], dims


def read_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX model, refusing external data that lives outside its folder."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if not model.graph.node or model.ir_version == 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph nodes or no IR version; truncated?)")
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Check every external-data location stays inside the model's folder, then load it."""
    base = path.parent.resolve()
    has_external = False
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        has_external = True
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (base / location).resolve()
        if not target.is_relative_to(base):
            raise ModelFileError(
                f"{path}: tensor '{tensor.name}' points its external data at '{location}', "
                "outside the model's folder"
            )
        if not target.is_file():
            raise ModelFileError(f"{path}: tensor '{tensor.name}' external data file '{location}' is missing")
    if has_external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: cannot read external data ({_first_line(exc)})") from None


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs are left out)."""
    initializers = {init.name for init in model.graph.initializer}
    return [inp for inp in model.graph.input if inp.name not in initializers]


def fix_input_shapes(
    model: onnx.ModelProto, overrides: dict[str, tuple[int, ...]], source: str = "model"
) -> list[InputSpec]:
    """Write the given static shapes into the graph inputs; fail on symbolic dims left over."""
    inputs = graph_inputs(model)
    names = [inp.name for inp in inputs]
    for name in overrides:
        if name not in names:
            raise InputShapeError(
                f"--input-shape names '{name}', but {source} has inputs: {', '.join(names) or '(none)'}"
            )
    specs = []
    for inp in inputs:
        tensor_type = inp.type.tensor_type
        dims = tensor_type.shape.dim
        if inp.name in overrides:
            shape = overrides[inp.name]
            if dims and len(dims) != len(shape):
                raise InputShapeError(
                    f"--input-shape {inp.name}: rank {len(shape)} given, but the input has rank {len(dims)}"
                )
            del dims[:]
            for size in shape:
                dims.add().dim_value = size
        else:
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            if not tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") or d.dim_value <= 0 for d in dims
            ):
                example = "x".join(str(s) if isinstance(s, int) and s > 0 else "1" for s in shown) or "1"
                raise InputShapeError(
                    f"{source}: input '{inp.name}' has a symbolic shape {shown}; "
                    f"give it with --input-shape {inp.name}={example}"
                )
            shape = tuple(d.dim_value for d in dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        specs.append(InputSpec(inp.name, tuple(shape), dtype))
    return specs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
