"""Width: keep a ratio of a channel group's output channels (coupled layers share one gene)."""

from __future__ import annotations

from hanasc.passes.config import Config
from hanasc.passes.kinds.base import ChoiceKind, KernelSpec, OnnxEdit, Slot, op_check
from hanasc.passes.width import PruneChannels, channel_groups, kept_count, width_masks


def depthwise_groups(graph, edit: OnnxEdit) -> None:
    """Width in ONNX: a depthwise conv's ``group`` follows its kept channels (the sliced initializers take
    their new shapes in the rewrite's final weight step, ``hanasc.compile.onnx_rewrite``)."""
    for node in graph.nodes:
        if node.op != "Conv" or len(node.inputs) < 2 or node.inputs[1].name not in edit.weights:
            continue
        w = edit.weights[node.inputs[1].name]
        if int(node.attrs.get("group", 1)) > 1 and w.shape[1] == 1:  # depthwise: one group per channel
            node.attrs["group"] = int(w.shape[0])


class Width(ChoiceKind):
    name = "width"
    gene = "width"
    fields = ("width",)
    gene_rank = (2, 0)
    column_rank = 2
    whole_config = True  # channel groups and importances over the whole graph, as the simulator's
    simulation = "pruned channels zeroed in the original weights"
    torch_form = (
        "the simulation's mask in the forward pass, straight-through gradient (pruned entries stay zero)"
    )
    onnx_rewrite = staticmethod(depthwise_groups)
    columns = (("width", lambda row: f"{row['width']:g}"),)

    def slots(self, model, options) -> list[tuple[int, Slot]]:
        widths = (1.0, *[w for w in options.widths if w != 1.0])
        groups = [g for g in channel_groups(model.mod["main"], model.mod) if g.prunable]
        # coupled layers (producers and their depthwise chain) share one gene
        return [
            (i, Slot(f"{g.name}:width", self.gene, tuple(g.layers), widths)) for i, g in enumerate(groups)
        ]

    def relax_pass(self, config: Config, ranges):
        return PruneChannels(config)

    def simulate(self, func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
        """Pruned channels as zeroed weights of the original shapes (``hanasc.passes.width.width_masks``)."""
        if any(config.choice(layer.name).width < 1.0 for layer in layers):
            return dict(width_masks(func, weights, config))
        return weights

    def cost_shapes(self, layer, choice, specs: list[KernelSpec]) -> list[KernelSpec]:
        """Channels kept by the ratios of the groups the layer reads and writes (set by the cost model)."""
        for s in specs:
            s.cout = max(1, kept_count(s.cout, s.out_ratio))
            if s.depthwise:
                s.cin = s.groups = s.cout
            else:
                s.cin = max(1, kept_count(s.cin, s.in_ratio))
        return specs

    def check_allowed(self, choice, allowed) -> str | None:
        return op_check("width", choice.width != 1.0, allowed)
