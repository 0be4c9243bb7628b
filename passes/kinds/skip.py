"""Skip (depth): drop an identity-residual block, ``x + f(x) -> x`` (one gene per block, ``Config.skip``)."""

from __future__ import annotations

from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.depth import SkipBlocks, residual_blocks, residual_blocks_onnx
from hanasc.passes.kinds.base import ChoiceKind, OnnxEdit, OnnxRewriteError, Slot, TorchHook


def bypass_skipped_blocks(graph, edit: OnnxEdit) -> None:
    """Each skipped block's Add output is replaced by its skip input (an Identity keeps a graph output's
    name), then ``graph.cleanup()`` drops the dead branches. ``graph``: an onnx-graphsurgeon Graph."""
    blocks = {b.name: b for b in residual_blocks_onnx(edit.onnx_model)}
    missing = [name for name in edit.config.skip if name not in blocks]
    if missing:
        raise OnnxRewriteError(f"skipped block '{missing[0]}' is not a residual block of the ONNX graph")
    _bypass(graph, [blocks[name] for name in edit.config.skip])
    graph.cleanup()


def _bypass(graph, skipped: list) -> None:
    nodes = {node.name: node for node in graph.nodes}
    tensors = graph.tensors()
    replaced: dict = {}  # a bypassed Add's output name -> the tensor that stands for it now (chained skips)
    for block in skipped:
        add = nodes.get(block.add_node)
        if add is None:
            raise OnnxRewriteError(f"residual block '{block.name}': Add node '{block.add_node}' not found")
        skip = replaced.get(block.skip) or tensors.get(block.skip)
        if skip is None:
            raise OnnxRewriteError(f"residual block '{block.name}': skip input '{block.skip}' not found")
        out = add.outputs[0]
        replaced[out.name] = skip
        if any(out is t for t in graph.outputs):  # keep the graph output's name
            add.op, add.attrs = "Identity", {}
            add.inputs.clear()
            add.inputs.append(skip)
            continue
        for consumer in list(out.outputs):
            for i, tensor in enumerate(consumer.inputs):
                if tensor is out:
                    consumer.inputs[i] = skip
        add.outputs.clear()


def _zero_input(index: int) -> TorchHook:
    def hook(inputs: list) -> list:
        inputs[index] = inputs[index] * 0.0
        return inputs

    return hook


class Skip(ChoiceKind):
    name = "depth"
    gene = "skip"
    fields = ("skip",)  # Config.skip: the block names
    gene_rank = (3, 0)
    column_rank = 4
    whole_config = True
    simulation = "the block's residual branch multiplied by a 0/1 gate in the simulation graph"
    torch_form = "the block's branch multiplied by 0 at its Add, as the simulation graph gates it"
    onnx_rewrite = staticmethod(bypass_skipped_blocks)
    columns = (("skipped", lambda row: row["skipped_block"] or ""),)

    def slots(self, model, options) -> list[tuple[int, Slot]]:
        blocks = residual_blocks(model.mod["main"])
        return [
            (i, Slot(f"{b.name}:skip", self.gene, (b.name,), (False, True))) for i, b in enumerate(blocks)
        ]

    def decode(self, slot: Slot, value, layers: dict[str, LayerChoice], skip: list[str]) -> None:
        if value:
            skip.append(slot.layers[0])

    def encode(self, slot: Slot, config: Config):
        return slot.layers[0] in config.skip

    def relax_pass(self, config: Config, ranges):
        return SkipBlocks(config)

    def torch_hooks(self, model, config: Config, ranges) -> dict[str, TorchHook]:
        blocks = residual_blocks_onnx(model.onnx_model)
        return {b.add_node: _zero_input(b.branch_input) for b in blocks if b.name in config.skip}

    def check_config(self, config: Config, allowed) -> str | None:
        if config.skip and "skip" not in allowed.ops:
            return "skipping blocks is not supported"
        return None

    def report_cells(self, model, config: Config) -> dict[str, dict]:
        skipped = set(config.skip)
        in_skipped = {
            layer: b.name
            for b in residual_blocks(model.mod["main"])
            if b.name in skipped
            for layer in b.layers
        }
        return {layer.name: {"skipped_block": in_skipped.get(layer.name)} for layer in model.layers}
