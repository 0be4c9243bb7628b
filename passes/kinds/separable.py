"""Separable: a standard KxK conv becomes depthwise KxK + pointwise 1x1 (weights by decomposition)."""

from __future__ import annotations

from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.kinds.base import ChoiceKind, KernelSpec, OnnxEdit, Slot, op_check
from hanasc.passes.kinds.kernel import conv_nodes, kernel_weight
from hanasc.passes.quant_reference import fake_quantize_weight
from hanasc.passes.separable import SeparableConv, decompose_separable, reconstruct_separable


def split_separable(graph, edit: OnnxEdit) -> None:
    """Separable in ONNX: ``L`` becomes ``L.dw`` (KxK, group = Cin, the original strides/pads/dilations,
    shrunk kernel included) then ``L.pw`` (1x1, the original bias)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    for node in conv_nodes(graph, edit):
        layer = node.name
        if not edit.config.layers[layer].separable:
            continue
        dw_value = kernel_weight(edit, layer)
        mid = gs.Variable(f"{node.outputs[0].name}.dw", dtype=node.outputs[0].dtype)
        dw_attrs = {k: v for k, v in node.attrs.items() if k != "group"}
        dw_attrs["group"] = int(dw_value.shape[0])
        dw_weight = gs.Constant(f"{layer}.dw.weight", np.ascontiguousarray(dw_value))
        depthwise = gs.Node("Conv", f"{layer}.dw", dw_attrs, [node.inputs[0], dw_weight], [mid])
        spatial = len(dw_value.shape[2:])
        pw_value = np.ascontiguousarray(edit.weights[f"{layer}.pw.weight"])
        pw_weight = gs.Constant(f"{layer}.pw.weight", pw_value)
        pw_attrs = {
            "kernel_shape": [1] * spatial,
            "strides": [1] * spatial,
            "pads": [0] * (2 * spatial),
            "dilations": [1] * spatial,
            "group": 1,
        }
        outputs = list(node.outputs)
        node.outputs.clear()
        pointwise = gs.Node("Conv", f"{layer}.pw", pw_attrs, [mid, pw_weight, *node.inputs[2:]], outputs)
        node.inputs.clear()
        graph.nodes.extend([depthwise, pointwise])


class Separable(ChoiceKind):
    name = "separable"
    gene = "separable"
    fields = ("separable",)
    gene_rank = (1, 0)
    column_rank = 1
    simulation = "the product of the (quantized) depthwise and pointwise factors"
    torch_form = (
        "the simulation's factorization of the current weight in the forward pass (a projection), "
        "straight-through gradient to the original-shape weight"
    )
    onnx_rewrite = staticmethod(split_separable)
    columns = (("separable", lambda row: "yes" if row["separable"] else ""),)

    def slots(self, model, options) -> list[tuple[int, Slot]]:
        return [
            (i, Slot(f"{layer.name}:separable", self.gene, (layer.name,), (False, True)))
            for i, layer in enumerate(model.layers)
            if layer.op == "conv" and layer.kernel and max(layer.kernel) > 1
        ]

    def relax_pass(self, config: Config, ranges):
        return SeparableConv(config)

    def simulate(self, func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
        """A separable layer as the product of its depthwise and pointwise factors, each quantized to the
        layer's weight bits as the two convs the pass makes are."""
        for layer in layers:
            choice = config.choice(layer.name)
            if choice.separable:
                dw, pw, _ = decompose_separable(weights[layer.weight])
                weights[layer.weight] = reconstruct_separable(
                    fake_quantize_weight(dw, choice.w_bits), fake_quantize_weight(pw, choice.w_bits)
                )
        return weights

    def exported_names(self, name: str, choice: LayerChoice, names: list[str]) -> list[str]:
        return [f"{name}.dw", f"{name}.pw"] if choice.separable else names

    def cost_shapes(self, layer, choice, specs: list[KernelSpec]) -> list[KernelSpec]:
        """Depthwise KxK then pointwise 1x1 (weight-only quantized: it reads float activations)."""
        if not choice.separable:
            return specs
        out = []
        for s in specs:
            if s.dense or s.depthwise:
                out.append(s)
                continue
            h, w = s.h // s.stride, s.w // s.stride
            out.append(KernelSpec(s.cin, s.cin, s.h, s.w, s.kernel, s.stride, groups=s.cin, dtype=s.dtype))
            out.append(KernelSpec(s.cin, s.cout, h, w, kernel=1, dtype=s.dtype, float_activations=True))
        return out

    def check_allowed(self, choice, allowed) -> str | None:
        return op_check("separable", choice.separable, allowed)

    def check_layer(self, choice, layer) -> str | None:
        if choice.separable and layer.op != "conv":
            return f"separable applies to standard convs, not {layer.op}"
        return None
