"""The choice-kind contract: one object per kind of change the search makes, declaring all its forms.

A kind declares its genes (the search-space slots it adds and how a gene value is written into a Config
and read back), its Relax pass, its simulation (a weight step on the original graph's weights, or a gate
the simulator builds), its ONNX rewrite, its trainable torch form, how it changes a layer's kernels for the
cost model, its checks against a target's allowed choices, and its report columns. Every hook has a
default that leaves things as they are, so a new kind overrides only what it changes.

Heavy modules (TVM passes, torch, onnx-graphsurgeon) are imported inside the hooks: looking a kind up, as
``hanasc.targets`` does, imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from hanasc.core.errors import HanascError
from hanasc.core.kernel_shape import KernelShape
from hanasc.passes.config import Config, ExtraField, LayerChoice


class OnnxRewriteError(HanascError):
    """The ONNX graph has a form the rewriter cannot reproduce the passes' change on."""


@dataclass(frozen=True)
class Slot:
    """One gene: ``kind`` (the kind's gene name: precision/separable/kernel/width/skip...), the layers (or
    block) it sets, its choices (the first leaves the model as it is)."""

    name: str
    kind: str
    layers: tuple[str, ...]
    choices: tuple


@dataclass
class OnnxEdit:
    """What an ONNX rewrite step reads: the architecture-only Config, the materialized weights (by name)
    and the original cleaned ONNX model."""

    config: Config
    weights: dict
    onnx_model: Any


@dataclass
class KernelSpec(KernelShape):
    """One kernel a layer runs as, for the cost model: its shape plus what the kinds pass each other (the
    channel ratios a width sets, weight bits, float activations of a pointwise half); the kinds' cost hooks
    edit it in place."""

    depthwise: bool = False
    in_ratio: float = 1.0  # width of the group the layer reads
    out_ratio: float = 1.0  # width of the group the layer writes
    weight_bits: int = 32
    float_activations: bool = False  # weight-only quantized (the pointwise half of a separable layer)


TorchHook = Callable[[list], list]  # an ONNX node's inputs -> the inputs the torch form runs it on
Column = tuple[str, Callable[[dict], str]]  # (Markdown header, report row -> cell)


class ChoiceKind:
    """Base of every choice kind; subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str] = ""
    gene: ClassVar[str] = ""  # the slots' kind (slot names end in ':<gene>')
    fields: ClassVar[tuple[str, ...]] = ()  # the LayerChoice (or Config-level) fields it reads and writes
    extra_fields: ClassVar[tuple[ExtraField, ...]] = ()  # fields LayerChoice does not name (new kinds)
    modes: ClassVar[tuple[str, ...]] = ("joint", "arch")  # the space modes that search it
    # slots are ordered by (gene_rank[0], position, gene_rank[1]): genomes keep their order
    gene_rank: ClassVar[tuple[int, int]] = (100, 0)
    column_rank: ClassVar[int] = 100  # order of checks and report columns
    whole_config: ClassVar[bool] = False  # the pass sees every layer, not only those outside skipped blocks
    architecture: ClassVar[bool] = True  # False: a precision the target's own toolchain applies to ONNX
    simulation: ClassVar[str] = ""  # how the simulator reproduces it
    torch_form: ClassVar[str] = ""  # how the trainable torch form computes it
    onnx_rewrite: ClassVar[Callable[[Any, OnnxEdit], None] | None] = None  # (gs graph, edit); None: not there
    columns: ClassVar[tuple[Column, ...]] = ()

    # --- genes ---------------------------------------------------------------------------------------------
    def slots(self, model, options) -> list[tuple[int, Slot]]:
        """(position, slot) for every gene of ``model`` (``model.layers``, ``model.mod``); ``options``: the
        space options (``precisions``, ``widths``: what the target and the user allow)."""
        return []

    def decode(self, slot: Slot, value, layers: dict[str, LayerChoice], skip: list[str]) -> None:
        """Write a gene's value into the Config being built."""
        for layer in slot.layers:
            layers.setdefault(layer, LayerChoice()).set(self.fields[0], value)

    def encode(self, slot: Slot, config: Config):
        """The gene value ``config`` stands for."""
        return config.choice(slot.layers[0]).get(self.fields[0])

    # --- forms ---------------------------------------------------------------------------------------------
    def relax_pass(self, config: Config, ranges):
        """A ``tvm.transform`` module pass applying this kind of ``config``."""
        raise NotImplementedError(f"choice kind '{self.name}' has no Relax pass")

    def simulate(self, func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
        """The simulator's weight step on the original-shape weights (default: none, a gate instead)."""
        return weights

    def exported_names(self, name: str, choice: LayerChoice, names: list[str]) -> list[str]:
        """The exported ONNX nodes ``name`` becomes (which carry its precision choices)."""
        return names

    def torch_hooks(self, model, config: Config, ranges) -> dict[str, TorchHook]:
        """ONNX node name -> how the torch form changes that node's inputs (beyond the simulated weights)."""
        return {}

    def cost_shapes(self, layer, choice: LayerChoice, specs: list[KernelSpec]) -> list[KernelSpec]:
        """The kernels a layer runs as once this kind's choice is applied."""
        return specs

    # --- checks and reports --------------------------------------------------------------------------------
    def check_allowed(self, choice: LayerChoice, allowed) -> str | None:
        """Why the target's allowed choices (``weight_bits``, ``act_bits``, ``ops``) reject ``choice``."""
        return None

    def check_layer(self, choice: LayerChoice, layer) -> str | None:
        """Why ``choice`` does not apply to ``layer`` (a ``LayerInfo``)."""
        return None

    def check_config(self, config: Config, allowed) -> str | None:
        """Why the target's choices reject ``config`` as a whole (block-level kinds)."""
        return None

    def report_cells(self, model, config: Config) -> dict[str, dict]:
        """Layer name -> this kind's cells of the report's per-layer table."""
        return {
            layer.name: {f: config.choice(layer.name).get(f) for f in self.fields} for layer in model.layers
        }


def op_check(op: str, used: bool, allowed) -> str | None:
    """The message for an architecture change the target's ``ops`` do not list."""
    if used and op not in allowed.ops:
        return f"'{op}' changes are not supported on this target"
    return None
