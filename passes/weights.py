"""Edit the named weight parameters of a hanasc Relax function (values, shapes, new or removed weights).

A hanasc module's ``main`` takes ``(inputs..., weights...)``; the weight values ride in the function's
``params`` attribute and ``num_input`` counts the real inputs. Passes that change weights (quantize,
decompose, prune, crop) use :class:`WeightEditor` so the signature, the attribute and the shapes inferred
downstream stay consistent.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


def num_inputs(func: relax.Function) -> int:
    return int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)


def weight_params(func: relax.Function) -> dict[str, relax.Var]:
    """The weight parameters of ``func`` by name."""
    return {p.name: p for p in func.params[num_inputs(func) :]}


def weight_values(func: relax.Function) -> dict[str, np.ndarray]:
    """The weight values of ``func`` by parameter name (empty when the weights are bound as constants)."""
    if not func.attrs or "params" not in func.attrs:
        return {}
    names = [p.name for p in func.params[num_inputs(func) :]]
    return {name: value.numpy() for name, value in zip(names, func.attrs["params"], strict=True)}


def weight_name_of(expr: relax.Expr, func: relax.Function) -> str | None:
    """The parameter name when ``expr`` is one of ``func``'s weight parameters, else None."""
    if isinstance(expr, relax.Var):
        params = weight_params(func)
        if expr.name in params and params[expr.name].same_as(expr):
            return expr.name
    return None


@mutator
class _RemapVars(PyExprMutator):
    """Substitute variables and re-derive every binding's shape (PyExprMutator re-normalizes)."""

    def __init__(self, mapping: dict, mod=None) -> None:
        super().__init__(mod)
        self.mapping = mapping

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.mapping.get(var, var)


class WeightEditor:
    """Collect weight edits for one function, then :meth:`finish` a new function with them applied."""

    def __init__(self, func: relax.Function) -> None:
        self.func = func
        self.n_inputs = num_inputs(func)
        self.values = weight_values(func)
        self.vars = weight_params(func)
        self._order = list(self.vars)
        self._remap: dict[relax.Var, relax.Var] = {}

    def value(self, name: str) -> np.ndarray:
        return self.values[name]

    def var(self, name: str) -> relax.Var:
        return self.vars[name]

    def set(self, name: str, value: np.ndarray) -> relax.Var:
        """Replace a weight's value; returns its (possibly new, if shape/dtype changed) variable."""
        value = np.ascontiguousarray(value)
        old = self.vars[name]
        if self.values[name].shape != value.shape or self.values[name].dtype != value.dtype:
            new = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
            self._remap[self.func_param(name)] = new
            self.vars[name] = new
            old = new
        self.values[name] = value
        return old

    def add(self, name: str, value: np.ndarray, after: str | None = None) -> relax.Var:
        """Add a new weight (placed after ``after`` in the signature, else at the end)."""
        if name in self.vars:
            raise ValueError(f"weight '{name}' exists")
        value = np.ascontiguousarray(value)
        var = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
        self.vars[name], self.values[name] = var, value
        position = self._order.index(after) + 1 if after in self._order else len(self._order)
        self._order.insert(position, name)
        return var

    def remove(self, name: str) -> None:
        """Drop a weight; the body must no longer use it when :meth:`finish` runs."""
        self._order.remove(name)
        del self.vars[name], self.values[name]

    def func_param(self, name: str) -> relax.Var:
        return weight_params(self.func)[name]

    def finish(self, body_func: relax.Function | None = None) -> relax.Function:
        """A new function: ``body_func``'s body (default the original) with the edits applied."""
        source = body_func if body_func is not None else self.func
        body = _RemapVars(self._remap).visit_expr(source.body) if self._remap else source.body
        params = list(self.func.params[: self.n_inputs]) + [self.vars[n] for n in self._order]
        free = {v.name for v in relax.analysis.free_vars(body)}
        removed = free - {p.name for p in params}
        if removed:
            raise ValueError(f"body still uses removed weights: {sorted(removed)}")
        attrs = dict(self.func.attrs) if self.func.attrs else {}
        attrs["params"] = [tvm.runtime.tensor(self.values[n]) for n in self._order]
        attrs["num_input"] = self.n_inputs
        return relax.Function(
            params, body, None, self.func.is_pure, tvm.ir.make_node("ir.DictAttrs", **attrs)
        )


WEIGHT_SUFFIXES = (".dw.weight", ".pw.weight", ".weight")


def layer_of_weight(name: str) -> str | None:
    """The layer a weight parameter belongs to: ``L.weight``, ``L.dw.weight``, ``L.pw.weight`` -> ``L``."""
    for suffix in WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None
