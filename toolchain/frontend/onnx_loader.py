"""Read an ONNX file safely: validate it, resolve external data inside its folder, fix input shapes.

Everything here runs before any tensor of the model is allocated or any graph is executed: a file that
is not ONNX, an opset outside the supported range, external data outside the model's folder, a declared
or inferred tensor larger than :data:`MAX_TENSOR_ELEMENTS`, an input type that is not numeric, or
malformed hanasc metadata is refused with one line that names the file (and the tensor or node).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from hanasc.core.errors import InputShapeError, ModelFileError, ModelSizeError

_SHAPE_RE = re.compile(r"^(?P<name>[^=]+)=(?P<dims>\d+(?:[x,]\d+)*)$")

#: The largest tensor (in elements) a model may declare, hold in an initializer or compute: 2**28 elements
#: (1 GiB of float32). Larger ones are refused before anything is allocated. ``HANASC_MAX_TENSOR_ELEMENTS``
#: raises or lowers it.
MAX_TENSOR_ELEMENTS = 2**28
#: Default-domain opsets the frontend accepts: TVM 0.27's ONNX importer has converters up to opset 23 (a
#: newer opset would be converted with older semantics); opsets before 7 (2017, before numpy-style
#: broadcasting) are not tested and are refused rather than guessed at.
MIN_OPSET, MAX_OPSET = 7, 23
_INT64_MAX = 2**63 - 1


def max_tensor_elements() -> int:
    """:data:`MAX_TENSOR_ELEMENTS`, or ``$HANASC_MAX_TENSOR_ELEMENTS`` when set to a positive integer."""
    text = os.environ.get("HANASC_MAX_TENSOR_ELEMENTS", "")
    return int(text) if text.isdigit() and int(text) > 0 else MAX_TENSOR_ELEMENTS


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
    limit = max_tensor_elements()
    if math.prod(dims) > limit:
        raise InputShapeError(
            f"--input-shape '{text}': {math.prod(dims):,} elements, more than the limit of {limit:,} "
            "(HANASC_MAX_TENSOR_ELEMENTS)"
        )
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
    _check_opset(model, path)
    _check_initializer_sizes(model, path)
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError, TypeError) as exc:
        # the checker names the node on the lines after the first: joined into one
        reason = " ".join(str(exc).split())[:400] or type(exc).__name__
        raise ModelFileError(f"{path}: invalid ONNX model: {reason}") from None
    _check_graph(model, path)
    check_metadata(model, str(path))
    check_finite_weights(model, str(path))
    return model


def _check_opset(model: onnx.ModelProto, path: Path) -> None:
    """The default-domain opset must be one TVM's importer and the cleaning passes handle."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelFileError(f"{path}: the model imports no default-domain (ai.onnx) opset")
    if not MIN_OPSET <= versions[0] <= MAX_OPSET:
        raise ModelFileError(
            f"{path}: opset {versions[0]} is not supported (hanasc reads opsets {MIN_OPSET} to {MAX_OPSET}; "
            "convert with onnx.version_converter)"
        )


def _elements(dims, label: str, path: Path) -> int:
    """The element count of ``dims``; refuses negative dims and counts over the limit (nothing allocated)."""
    if any(d < 0 for d in dims):
        raise ModelSizeError(f"{path}: {label} has a negative dimension {list(dims)}")
    count = math.prod(dims)
    limit = max_tensor_elements()
    if count > limit:
        raise ModelSizeError(
            f"{path}: {label} has shape {list(dims)}: {count:,} elements, more than the limit of {limit:,} "
            "(HANASC_MAX_TENSOR_ELEMENTS)"
        )
    return count


def _check_initializer_sizes(model: onnx.ModelProto, path: Path) -> None:
    """Every initializer's declared shape is within the limit and matches the data it holds."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        label = f"tensor '{tensor.name}'"
        count = _elements(tensor.dims, label, path)
        if tensor.data_type not in _TENSOR_TYPES or tensor.data_type == onnx.TensorProto.STRING:
            raise ModelFileError(
                f"{path}: {label} has unsupported element type {_type_name(tensor.data_type)}"
            )
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        held = _held_values(tensor)
        if held is not None and held != count:
            what = f"{held} values" if held >= 0 else f"{len(tensor.raw_data)} bytes (not whole values)"
            raise ModelFileError(f"{path}: {label} declares shape {list(tensor.dims)} but holds {what}")


def check_finite_weights(model: onnx.ModelProto, source: str) -> None:
    """Float initializers and constants hold no NaN or infinity (a broken export, or a corrupted file)."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        values = onnx.numpy_helper.to_array(tensor)
        if not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            raise ModelFileError(f"{source}: tensor '{tensor.name}' holds {bad} NaN or infinite values")


def _held_values(tensor: onnx.TensorProto) -> int | None:
    """How many values a tensor's data fields hold (None for sub-byte types, packed several to a byte)."""
    if tensor.data_type in _SUB_BYTE_TYPES:
        return None
    if tensor.HasField("raw_data"):
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        return len(tensor.raw_data) // itemsize if len(tensor.raw_data) % itemsize == 0 else -1
    for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        values = getattr(tensor, name)
        if len(values):
            return len(values) // (2 if tensor.data_type in _COMPLEX_TYPES else 1)
    return 0


_TENSOR_TYPES = set(onnx.helper.get_all_tensor_dtypes())
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
_SUB_BYTE_TYPES = {
    t
    for t in _TENSOR_TYPES
    if onnx.helper.tensor_dtype_to_np_dtype(t).name.endswith(("int4", "int2", "4_e2m1fn"))
}
_COMPLEX_TYPES = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def _check_graph(model: onnx.ModelProto, path: Path) -> None:
    """Inputs, outputs and declared shapes the rest of hanasc can rely on (the checker leaves these open)."""
    graph = model.graph
    inputs = graph_inputs(model)
    if not inputs:
        raise ModelFileError(f"{path}: the graph has no inputs (only initializers)")
    if not graph.output:
        raise ModelFileError(f"{path}: the graph has no outputs")
    for kind, values in (("input", inputs), ("output", graph.output)):
        seen: set[str] = set()
        for value in values:
            if value.name in seen:
                raise ModelFileError(f"{path}: {kind} '{value.name}' is listed twice")
            seen.add(value.name)
            if not value.type.HasField("tensor_type"):
                raise ModelFileError(f"{path}: {kind} '{value.name}' is not a tensor")
            if not _is_numeric(value.type.tensor_type.elem_type):
                raise ModelFileError(
                    f"{path}: {kind} '{value.name}' has element type "
                    f"{_type_name(value.type.tensor_type.elem_type)} (hanasc takes float, int, uint or bool)"
                )
    for value in [*inputs, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        # a negative declared dim is some exporters' (Paddle's) way of writing a dynamic one: not checked
        # here, it is unknown like a symbolic dim (an input then needs --input-shape)
        if dims and all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            _elements([d.dim_value for d in dims], f"'{value.name}'", path)


def _is_numeric(elem_type: int) -> bool:
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except (KeyError, ValueError, TypeError):
        return False
    return dtype.kind in "fiub" and elem_type not in _SUB_BYTE_TYPES


def _type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def check_metadata(model: onnx.ModelProto, source: str) -> None:
    """hanasc's own metadata (``hanasc.preprocess``, written by the zoo) must be what hanasc wrote."""
    meta = {p.key: p.value for p in model.metadata_props}
    if "hanasc.preprocess" not in meta:
        return
    try:
        value = json.loads(meta["hanasc.preprocess"])
    except ValueError:
        value = None
    ok = isinstance(value, dict)
    if ok and "resize" in value:
        ok = (
            isinstance(value["resize"], int) and not isinstance(value["resize"], bool) and value["resize"] > 0
        )
    for key in ("mean", "std"):
        if ok and key in value:
            v = value[key]
            ok = isinstance(v, list) and len(v) in (1, 3) and all(_positive_or_zero(x, key) for x in v)
    if not ok:
        raise ModelFileError(
            f"{source}: metadata 'hanasc.preprocess' is not a preprocessing record "
            '(expected JSON like {"resize": 256, "mean": [0.485, 0.456, 0.406], "std": [0.229, ...]})'
        )


def _positive_or_zero(x, key: str) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return False
    return x > 0 if key == "std" else True


def check_tensor_sizes(model: onnx.ModelProto, source: str) -> None:
    """Infer shapes (nothing is run or allocated) and refuse any tensor larger than the limit.

    Runs after the input shapes are fixed and before the graph is cleaned: constant folding (onnxslim,
    TVM's importer) and the simulator would otherwise allocate such a tensor.
    """
    bare = onnx.ModelProto()
    bare.CopyFrom(model)  # declared intermediate and output shapes may predate --input-shape: infer afresh
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError, ValidationError or RuntimeError
        raise ModelFileError(f"{source}: shape inference failed: {_first_line(exc)}") from None
    graph = inferred.graph
    for value in [*graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            producer = next((n for n in graph.node if value.name in n.output), None)
            where = f" (output of node '{producer.name}')" if producer is not None and producer.name else ""
            _elements([d.dim_value for d in dims], f"tensor '{value.name}'{where}", Path(source))


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Check every external-data location stays inside the model's folder, then load it."""
    base = path.parent.resolve()
    has_external = False
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        has_external = True
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        label = f"tensor '{tensor.name}'"
        if not location or "\0" in location:
            raise ModelFileError(f"{path}: {label} is marked external but names no data file")
        target = (base / location).resolve()
        if not target.is_relative_to(base):
            raise ModelFileError(
                f"{path}: {label} points its external data at '{location}', outside the model's folder"
            )
        if not target.exists():
            raise ModelFileError(f"{path}: {label} external data file '{location}' is missing")
        if not target.is_file():
            raise ModelFileError(f"{path}: {label} external data '{location}' is not a file")
        needed = _elements(tensor.dims, label, path)
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        nbytes = None if tensor.data_type in _SUB_BYTE_TYPES else needed * itemsize
        offset, length = (
            _external_int(info, "offset", label, path),
            _external_int(info, "length", label, path),
        )
        if nbytes is None:
            nbytes = length or 0
        if length is not None and length != nbytes:
            raise ModelFileError(
                f"{path}: {label} external data length {length} does not match its shape "
                f"{list(tensor.dims)} ({nbytes} bytes)"
            )
        if (offset or 0) + nbytes > target.stat().st_size:
            raise ModelFileError(
                f"{path}: {label} needs bytes {offset or 0}..{(offset or 0) + nbytes} of '{location}', "
                f"which has {target.stat().st_size}"
            )
    if has_external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{path}: cannot read external data ({_first_line(exc)})") from None


def _external_int(info: dict[str, str], key: str, label: str, path: Path) -> int | None:
    if key not in info:
        return None
    text = info[key]
    if not text.isdigit() or int(text) > _INT64_MAX:
        raise ModelFileError(f"{path}: {label} external data {key} '{text}' is not a non-negative integer")
    return int(text)


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
            if not tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") or d.dim_value <= 0 for d in dims
            ):
                raise InputShapeError(symbolic_shape_message(inp, source))
            shape = tuple(d.dim_value for d in dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        specs.append(InputSpec(inp.name, tuple(shape), dtype))
    return specs


def symbolic_shape_message(inp: onnx.ValueInfoProto, source: str) -> str:
    """The error for an input without a static shape, with the ``--input-shape`` a user would pass.

    Batch (the first dim of a rank >= 2 input) is suggested as 1 and declared static dims are kept; any
    other unknown dim cannot be guessed, so it is named by a letter (H, W for an NCHW image) and the user
    is told to give it: ``[-1, 3, '?', '?']`` -> ``--input-shape x=1x3xHxW (H, W: ...must be given)``.
    """
    tensor_type = inp.type.tensor_type
    if not tensor_type.HasField("shape"):
        return (
            f"{source}: input '{inp.name}' declares no shape (not even its rank); give it with "
            f"--input-shape {inp.name}=DxDx..., e.g. {inp.name}=1x3x224x224"
        )
    dims = tensor_type.shape.dim
    shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    names = _unknown_dim_names(len(dims))
    parts, unknown = [], []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            parts.append(str(d.dim_value))
        elif i == 0 and len(dims) >= 2:
            parts.append("1")
        else:
            parts.append(names[i])
            unknown.append(names[i])
    example = "x".join(parts) or "1"
    if not unknown:
        return (
            f"{source}: input '{inp.name}' has a symbolic batch dimension {shown}; "
            f"give it with --input-shape {inp.name}={example}"
        )
    what = "its spatial size" if len(dims) == 4 and set(unknown) <= {"H", "W"} else "these sizes"
    return (
        f"{source}: input '{inp.name}' has no static shape {shown}; give it with --input-shape "
        f"{inp.name}={example} with {', '.join(unknown)} given (batch 1; the model does not declare {what})"
    )


def _unknown_dim_names(rank: int) -> list[str]:
    if rank == 4:
        return ["N", "C", "H", "W"]
    if rank == 3:
        return ["N", "L", "D"]
    return [f"D{i}" for i in range(rank)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
