"""Import a cleaned ONNX graph into a TVM Relax IRModule (weights as named runtime parameters)."""

from __future__ import annotations

import warnings

import onnx

from hanasc.errors import ModelFileError, UnsupportedOperatorError
from hanasc.onnx_loader import InputSpec

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=True)
    except Exception as exc:  # the importer raises many error types; the user needs one line
        raise ModelFileError(
            f"{source}: TVM's ONNX importer failed: {str(exc).strip().splitlines()[0]}"
        ) from None
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.transform.Normalize()(mod)
