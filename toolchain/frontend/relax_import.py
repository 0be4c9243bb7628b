"""Import a cleaned ONNX graph into a TVM Relax IRModule (weights as named runtime parameters)."""

from __future__ import annotations

import contextlib
import gc
import io
import re
import warnings

import onnx

from hanasc.core.errors import ModelFileError, UnsupportedOperatorError
from hanasc.frontend.onnx_loader import InputSpec
from hanasc.targets.quiet import HARMLESS, filtered_native_stderr

_ONNX_DOMAINS = ("", "ai.onnx")


def check_supported_ops(model: onnx.ModelProto, source: str = "model") -> None:
    """Fail with the first node whose operator TVM's ONNX importer cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = _get_convert_map()
    for node in model.graph.node:
        if node.domain not in _ONNX_DOMAINS or node.op_type not in supported:
            domain = f" (domain '{node.domain}')" if node.domain not in _ONNX_DOMAINS else ""
            raise UnsupportedOperatorError(
                f"{source}: operator '{node.op_type}'{domain} at node '{node.name}' is not supported "
                "by TVM's ONNX importer"
            )


def import_relax(model: onnx.ModelProto, inputs: list[InputSpec], source: str = "model"):
    """Convert to Relax; ``main(inputs..., weights...)`` with the weight values in the ``params`` attr.

    Weight parameters keep their initializer names (``<layer>.weight``), which is how passes find layers.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    check_supported_ops(model, source)
    shape_dict = {spec.name: list(spec.shape) for spec in inputs}
    dtype_dict = {spec.name: spec.dtype for spec in inputs}
    printed, failure = io.StringIO(), None
    # the importer prints the failing operator to stdout, and its BlockBuilder warns on fd 2 when the
    # exception drops it: both are kept off the terminal, the reason becomes one line
    quiet = (*HARMLESS, "BlockBuilder destroyed with remaining blocks")
    with filtered_native_stderr(quiet), contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=True)
        except Exception as exc:  # the importer raises many error types; the user needs one line
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        gc.collect()
    if failure is not None:
        node = _failed_node(model, printed.getvalue())
        raise ModelFileError(f"{source}: TVM's ONNX importer failed{node}: {failure}")
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.transform.Normalize()(mod)


def _failed_node(model: onnx.ModelProto, printed: str) -> str:
    """`` at node 'NAME' (Op)``, from the importer's "Error converting operator Op, with inputs: [...]"."""
    match = re.search(r"Error converting operator (\w+), with inputs: \[([^\]]*)\]", printed)
    if not match:
        return ""
    op, first = match[1], match[2].split(",")[0].strip()
    nodes = [n for n in model.graph.node if n.op_type == op]
    if len(nodes) > 1:
        nodes = [n for n in nodes if n.input and re.sub(r"\W", "_", n.input[0]).strip("_") == first] or nodes
    return f" at node '{nodes[0].name}' ({op})" if len(nodes) == 1 else f" at a {op} node"
