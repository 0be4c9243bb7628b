"""Kernel: shrink a KxK kernel (K > 3) to its 3x3 centre."""

from __future__ import annotations

from hanasc.passes.config import Config
from hanasc.passes.kernel_shrink import ShrinkKernel, zero_outside_centre
from hanasc.passes.kinds.base import ChoiceKind, KernelSpec, OnnxEdit, OnnxRewriteError, Slot, op_check


def _conv_pads(node, spatial: int) -> list[int]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", ""):
        raise OnnxRewriteError(f"node '{node.name}': auto_pad convs cannot be shrunk (explicit pads needed)")
    return list(node.attrs.get("pads", [0] * (2 * spatial)))


def kernel_weight(edit: OnnxEdit, layer: str):
    """The materialized weight that carries a conv's kernel (its depthwise half when made separable)."""
    separable = edit.config.layers[layer].separable
    return edit.weights[f"{layer}.dw.weight" if separable else f"{layer}.weight"]


def conv_nodes(graph, edit: OnnxEdit) -> list:
    """The Conv nodes ``edit.config`` names, each checked to have an initializer weight."""
    import onnx_graphsurgeon as gs

    nodes = []
    for node in list(graph.nodes):
        if node.op != "Conv" or node.name not in edit.config.layers:
            continue
        if not isinstance(node.inputs[1], gs.Constant):
            raise OnnxRewriteError(
                f"node '{node.name}': its weight '{node.inputs[1].name}' is not an initializer"
            )
        nodes.append(node)
    return nodes


def shrink_kernels(graph, edit: OnnxEdit) -> None:
    """Kernel shrink in ONNX: ``kernel_shape`` and pads reduced by the crop margin (the cropped weight is
    written by the rewrite's final weight step)."""
    for node in conv_nodes(graph, edit):
        original_k = node.inputs[1].values.shape[2:]
        new_k = kernel_weight(edit, node.name).shape[2:]
        if tuple(new_k) != tuple(original_k):
            pads = _conv_pads(node, len(new_k))
            margins = [(a - b) // 2 for a, b in zip(original_k, new_k, strict=True)]
            node.attrs["pads"] = [p - m for p, m in zip(pads, margins * 2, strict=True)]
            node.attrs["kernel_shape"] = [int(k) for k in new_k]


class Kernel(ChoiceKind):
    name = "kernel"
    gene = "kernel"
    fields = ("kernel",)
    gene_rank = (1, 1)  # after separable, layer by layer
    column_rank = 3
    simulation = "the kernel zeroed outside its centre"
    torch_form = "the simulation's crop in the forward pass, straight-through gradient"
    onnx_rewrite = staticmethod(shrink_kernels)
    columns = (("kernel", lambda row: row["kernel"] or ""),)

    def slots(self, model, options) -> list[tuple[int, Slot]]:
        return [
            (i, Slot(f"{layer.name}:kernel", self.gene, (layer.name,), (None, 3)))
            for i, layer in enumerate(model.layers)
            if layer.kernel and layer.kernel[0] == layer.kernel[-1] and layer.kernel[0] > 3
        ]

    def relax_pass(self, config: Config, ranges):
        return ShrinkKernel(config)

    def simulate(self, func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
        """A shrunk kernel as the original kernel zeroed outside its centre."""
        for layer in layers:
            k, w = config.choice(layer.name).kernel, weights[layer.weight]
            if k is not None and k < w.shape[-1]:
                weights[layer.weight] = zero_outside_centre(w, k)
        return weights

    def cost_shapes(self, layer, choice, specs: list[KernelSpec]) -> list[KernelSpec]:
        for s in specs:
            if choice.kernel and not s.dense:
                s.kernel = choice.kernel
        return specs

    def check_allowed(self, choice, allowed) -> str | None:
        return op_check("kernel", choice.kernel is not None, allowed)

    def check_layer(self, choice, layer) -> str | None:
        if choice.kernel is not None and layer.op == "dense":
            return "kernel shrinking applies to convs, not dense layers"
        return None

    def report_cells(self, model, config: Config) -> dict[str, dict]:
        return {
            layer.name: {
                "kernel": config.choice(layer.name).kernel or layer.kernel[0] if layer.kernel else None
            }
            for layer in model.layers
        }
