"""Depth: find the identity-residual blocks ``x + f(x)`` of a model and skip chosen ones (``x + f(x) -> x``).

The same blocks, with the same names, are found in the Relax ``main`` (:func:`residual_blocks`, used by
:class:`SkipBlocks`) and in the cleaned ONNX graph (:func:`residual_blocks_onnx`, used by the simulator,
which multiplies the branch by a gate: gate 0 equals the skipped block exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm_ffi
from tvm import ir, relax
from tvm.ir import IRModule
from tvm.relax.dpl import rewrite_call

from hanasc.core.layers import tensor_shapes
from hanasc.passes.call_rewrite import CallRewrite
from hanasc.passes.config import ConfigError
from hanasc.passes.weights import WeightEditor, layer_of_weight, weight_params


@dataclass
class ResidualBlock:
    """An identity-residual block: ``add(x, y)`` where ``y`` is computed from ``x`` through ``layers``."""

    name: str
    layers: list[str]
    skip_input: int  # which input of the add is the skip x (the other one is the branch y)
    add_node: str = ""  # ONNX: the Add node's name; Relax: the name of the add's variable
    skip: str = ""  # the skip tensor (ONNX) / variable (Relax) name
    branch: str = ""  # the branch tensor / variable name

    @property
    def branch_input(self) -> int:
        """Which input of the add is the branch y (the one the simulator multiplies by the gate)."""
        return 1 - self.skip_input


@dataclass
class _Graph:
    """A DAG of nodes (inputs, then operations in order), reduced to what block finding needs."""

    ancestors: list[int] = field(default_factory=list)  # bitmask of each node's ancestors
    layers: list[list[str]] = field(default_factory=list)  # layers whose weight each node uses

    def add_node(self, parents: list[int], layers: list[str]) -> int:
        mask = 0
        for parent in parents:
            mask |= self.ancestors[parent] | (1 << parent)
        self.ancestors.append(mask)
        self.layers.append(layers)
        return len(self.ancestors) - 1

    def is_ancestor(self, a: int, b: int) -> bool:
        return bool(self.ancestors[b] >> a & 1)

    def branch_layers(self, x: int, y: int) -> list[str]:
        """The layers on the paths from ``x`` to ``y`` (in node order, each once)."""
        found: list[str] = []
        for node in range(x + 1, y + 1):
            if (node == y or self.is_ancestor(node, y)) and self.is_ancestor(x, node):
                found.extend(name for name in self.layers[node] if name not in found)
        return found


@dataclass
class _Candidate:
    layers: list[str]
    skip_input: int
    add_node: str
    skip: str
    branch: str
    handle: object = None  # Relax: (add call's x, y) variables


def _match_add(graph: _Graph, a: int, b: int) -> tuple[int, int, int] | None:
    """(skip_index, x, y) when one input of the add is an ancestor of the other, else None."""
    if a != b and graph.is_ancestor(a, b):
        return 0, a, b
    if a != b and graph.is_ancestor(b, a):
        return 1, b, a
    return None


def _common_prefix(names: list[str]) -> str:
    parts = [name.split(".") for name in names]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    return ".".join(common)


def _name_blocks(candidates: list[_Candidate]) -> list[ResidualBlock]:
    """Name each block by the common dotted prefix of its layers, else its last layer; names unique."""
    wanted = [_common_prefix(c.layers) or c.layers[-1] for c in candidates]
    names: list[str] = []
    for cand, name in zip(candidates, wanted, strict=True):
        if wanted.count(name) > 1:
            name = cand.layers[-1]
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return [
        ResidualBlock(n, c.layers, c.skip_input, c.add_node, c.skip, c.branch)
        for n, c in zip(names, candidates, strict=True)
    ]


# ---- Relax ----

_ADD = ir.Op.get("relax.add")


def _relax_candidates(func: relax.Function) -> list[_Candidate]:
    graph = _Graph()
    index: dict[relax.Var, int] = {}
    weights = set(weight_params(func).values())
    n_inputs = len(func.params) - len(weights)
    for param in func.params[:n_inputs]:
        index[param] = graph.add_node([], [])
    weight_uses: dict[relax.Var, set[str]] = {w: {w.name} for w in weights}  # weight-only values
    candidates = []
    for block in func.body.blocks:
        for binding in block.bindings:
            used = list(relax.analysis.free_vars(binding.value))
            parents = [index[v] for v in used if v in index]
            if not parents:  # computed from weights and constants only (e.g. a transposed dense weight)
                weight_uses[binding.var] = set().union(*(weight_uses.get(v, set()) for v in used))
                continue
            names = set().union(*(weight_uses.get(v, set()) for v in used))
            layers = sorted({layer_of_weight(n) for n in names} - {None})
            index[binding.var] = graph.add_node(parents, layers)
            value = binding.value
            if not (isinstance(value, relax.Call) and value.op.same_as(_ADD)):
                continue
            args = list(value.args)
            if not all(isinstance(a, relax.Var) and a in index for a in args) or not _same_shape(*args):
                continue
            match = _match_add(graph, index[args[0]], index[args[1]])
            if match is None:
                continue
            skip_index, x, y = match
            layers = graph.branch_layers(x, y)
            if layers:
                xv, yv = args[skip_index], args[1 - skip_index]
                candidates.append(
                    _Candidate(layers, skip_index, binding.var.name, xv.name, yv.name, handle=(xv, yv))
                )
    return candidates


def _same_shape(a: relax.Expr, b: relax.Expr) -> bool:
    ta, tb = a.ty, b.ty
    if not isinstance(ta, relax.TensorType) or not isinstance(tb, relax.TensorType):
        return False
    return ta.shape is not None and tb.shape is not None and tvm_ffi.structural_equal(ta.shape, tb.shape)


def residual_blocks(func: relax.Function | IRModule) -> list[ResidualBlock]:
    """The identity-residual blocks of a hanasc Relax function (or of a module's ``main``), in order."""
    if isinstance(func, IRModule):
        func = func["main"]
    return _name_blocks(_relax_candidates(func))


# ---- ONNX ----


def residual_blocks_onnx(model: onnx.ModelProto) -> list[ResidualBlock]:
    """The identity-residual blocks of a cleaned ONNX graph (``LoadedModel.onnx_model``), in order.

    Same blocks and names as :func:`residual_blocks` on the imported module; ``add`` is the Add node's
    name and ``skip_input`` tells which of its inputs is the skip (the simulator gates the other one).
    """
    shapes = tensor_shapes(model)
    weights = {init.name for init in model.graph.initializer}
    graph = _Graph()
    producer: dict[str, int] = {}
    for inp in model.graph.input:
        if inp.name not in weights:
            producer[inp.name] = graph.add_node([], [])
    candidates = []
    for node in model.graph.node:
        parents = [producer[t] for t in node.input if t in producer]
        if not parents:
            continue  # constants
        layers = sorted({layer_of_weight(t) for t in node.input if t in weights} - {None})
        index = graph.add_node(parents, layers)
        for out in node.output:
            producer[out] = index
        if node.op_type != "Add" or len(node.input) != 2 or not all(t in producer for t in node.input):
            continue
        a, b = node.input
        if a not in shapes or shapes.get(a, ((),))[0] != shapes.get(b, ((),))[0]:
            continue
        match = _match_add(graph, producer[a], producer[b])
        if match is None:
            continue
        skip_index, x, y = match
        layers = graph.branch_layers(x, y)
        if layers:
            candidates.append(
                _Candidate(layers, skip_index, node.name, node.input[skip_index], node.input[1 - skip_index])
            )
    return _name_blocks(candidates)


def gate_branch(x: np.ndarray, y: np.ndarray, gate: float) -> np.ndarray:
    """The simulation of a (possibly) skipped block: ``x + gate * y`` (gate 0 = skipped, 1 = kept)."""
    return x + np.float32(gate) * y


# ---- the pass ----


@relax.transform.function_pass(opt_level=0, name="hanasc.SkipBlocks")
class SkipBlocks(CallRewrite):
    """Rewrite ``add(x, f(x)) -> x`` for each residual block named in ``config.skip``; the dead branch and
    the skipped layers' weight parameters are removed."""

    op = "relax.add"

    def transform_function(self, func: relax.Function, mod: IRModule, ctx) -> relax.Function:
        if not self.config.skip or not isinstance(func, relax.Function):
            return func
        candidates = _relax_candidates(func)
        blocks = {b.name: (b, c) for b, c in zip(_name_blocks(candidates), candidates, strict=True)}
        for name in self.config.skip:
            if name not in blocks:
                known = ", ".join(blocks) or "none"
                raise ConfigError(f"skip: unknown residual block '{name}' (known blocks: {known})")
        chosen = [blocks[name][1].handle for name in self.config.skip]
        skipped = {layer for name in self.config.skip for layer in blocks[name][0].layers}

        def rewriter(expr: relax.Call, matches) -> relax.Expr:
            lhs, rhs = expr.args  # variables (matches[...] would be their bound values)
            for x, y in chosen:
                if (lhs.same_as(x) and rhs.same_as(y)) or (lhs.same_as(y) and rhs.same_as(x)):
                    return x
            return expr

        body = relax.analysis.remove_all_unused(rewrite_call(self.pattern, rewriter, func))
        used = {v.name for v in relax.analysis.free_vars(body.body)}
        editor = WeightEditor(func)
        for name in list(editor.vars):
            owner = layer_of_weight(name) or name.removesuffix(".bias")
            if owner in skipped and name not in used:
                editor.remove(name)
        return editor.finish(body)
