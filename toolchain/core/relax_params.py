"""Weights of a hanasc Relax module: named runtime parameters of ``main`` whose values ride in its attrs."""

from __future__ import annotations

import numpy as np


def input_count(mod, func_name: str = "main") -> int:
    """How many leading parameters of ``main`` are real inputs (the rest are weights)."""
    func = mod[func_name]
    return int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)


def weights_of(mod, func_name: str = "main") -> dict[str, np.ndarray]:
    """The weight values by parameter name, as numpy arrays."""
    from tvm import relax

    _, params = relax.frontend.detach_params(mod)
    func = mod[func_name]
    names = [p.name for p in func.params[input_count(mod, func_name) :]]
    values = params.get(func_name, [])
    return {name: value.numpy() for name, value in zip(names, values, strict=True)}


def is_packed(value: np.ndarray) -> bool:
    """Integer weights: int8, or 4/2-bit packed into uint8 (two or four values a byte).

    Bound before constant folding, their dequantization (or unpacking) is folded into fp32/int8 constants at
    compile time and the library stores the wide values; bound late they stay as stored.
    """
    return value.dtype in (np.uint8, np.int8)


def bind_weights(
    mod, weights: dict[str, np.ndarray] | None = None, func_name: str = "main", keep_packed: bool = False
):
    """Bind weights as constants (the module's own unless given), leaving ``main(inputs...)``.

    ``keep_packed`` leaves integer (int8 and packed) weights as parameters (``main(inputs..., packed...)``)
    so that a build can bind them after constant folding (``hanasc.targets.host.build_artifact``).
    """
    import tvm
    from tvm import relax

    weights = weights_of(mod, func_name) if weights is None else weights
    detached, _ = relax.frontend.detach_params(mod)
    bind = {k: v for k, v in weights.items() if not (keep_packed and is_packed(v))}
    bound = relax.transform.BindParams(func_name, {k: tvm.runtime.tensor(v) for k, v in bind.items()})(
        detached
    )
    func = bound[func_name]
    kept = len(weights) - len(bind)
    func = (
        func.with_attr("num_input", input_count(mod, func_name)) if kept else func.without_attr("num_input")
    )
    bound[func_name] = func
    return bound


def with_weight_values(mod, values: dict[str, np.ndarray], func_name: str = "main"):
    """A copy of ``mod`` whose named weights carry new values (same shapes and dtypes); others unchanged."""
    import tvm

    func = mod[func_name]
    names = [p.name for p in func.params[input_count(mod, func_name) :]]
    unknown = set(values) - set(names)
    if unknown:
        raise KeyError(f"not weights of {func_name}: {sorted(unknown)}")
    params = list(func.attrs["params"])
    for index, name in enumerate(names):
        if name in values:
            old = params[index]
            new = np.ascontiguousarray(values[name], dtype=old.dtype)
            if tuple(new.shape) != tuple(old.shape):
                raise ValueError(f"{name}: shape {new.shape} for a weight of shape {tuple(old.shape)}")
            params[index] = tvm.runtime.tensor(new)
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out[func_name] = func.with_attr("params", params)
    return out


def rewrite_functions(mutator, mod):
    """``mod`` with every Relax function visited by ``mutator`` (a ``relax.PyExprMutator`` built on
    ``mod``), and the PrimFuncs its builder emitted on the way (``call_te``)."""
    from tvm import relax

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def bound_value(mutator, var):
    """The value ``var`` is bound to in a ``relax.PyExprMutator``'s function so far; None for a function
    parameter (or any var without a binding)."""
    try:
        return mutator.lookup_binding(var)
    except Exception:  # a function parameter
        return None
