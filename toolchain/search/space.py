"""The search space: slots (one gene each) x choices, decoded into a Config.

Quantization genes: one per layer, a (weight bits, activation bits) pair the target allows.
Architecture genes: separable substitution (standard KxK convs), kernel shrink to 3x3 (K > 3), width per
channel group (coupled layers share one gene), skip per identity-residual block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import WIDTHS, Config, LayerChoice

DEFAULT_PRECISIONS: tuple[tuple[int, int], ...] = (
    (32, 32),
    (16, 16),
    (8, 8),
    (8, 32),
    (4, 8),
    (4, 32),
    (2, 8),
)


@dataclass(frozen=True)
class Slot:
    """One gene: ``kind`` in precision/separable/kernel/width/skip, the layers it sets, its choices."""

    name: str
    kind: str
    layers: tuple[str, ...]
    choices: tuple


@dataclass
class SpaceOptions:
    """What the target and the user allow (``mode``: joint, arch or quant)."""

    precisions: tuple[tuple[int, int], ...] = DEFAULT_PRECISIONS
    widths: tuple[float, ...] = WIDTHS
    mode: str = "joint"


@dataclass
class SearchSpace:
    slots: list[Slot] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def upper_bounds(self) -> np.ndarray:
        return np.array([len(s.choices) - 1 for s in self.slots], dtype=int)

    def identity(self) -> np.ndarray:
        """The genome that leaves the model unchanged (every slot's first choice is the original)."""
        return np.zeros(len(self.slots), dtype=int)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.integers(len(s.choices)) for s in self.slots], dtype=int)

    def log10_size(self) -> float:
        return float(sum(np.log10(len(s.choices)) for s in self.slots))

    def decode(self, genome) -> Config:
        """The Config a genome stands for."""
        layers: dict[str, LayerChoice] = {}
        skip: list[str] = []
        for slot, gene in zip(self.slots, genome, strict=True):
            value = slot.choices[int(gene)]
            if slot.kind == "skip":
                if value:
                    skip.append(slot.layers[0])
                continue
            for layer in slot.layers:
                choice = layers.setdefault(layer, LayerChoice())
                if slot.kind == "precision":
                    choice.w_bits, choice.a_bits = value
                elif slot.kind == "separable":
                    choice.separable = bool(value)
                elif slot.kind == "kernel":
                    choice.kernel = value
                elif slot.kind == "width":
                    choice.width = value
        return Config(layers={k: v for k, v in layers.items() if not v.is_identity()}, skip=skip)

    def encode(self, config: Config) -> np.ndarray:
        """The genome of a Config (choices outside the space fall back to the original)."""
        genome = self.identity()
        for i, slot in enumerate(self.slots):
            if slot.kind == "skip":
                value = slot.layers[0] in config.skip
            else:
                choice = config.choice(slot.layers[0])
                value = {
                    "precision": (choice.w_bits, choice.a_bits),
                    "separable": choice.separable,
                    "kernel": choice.kernel,
                    "width": choice.width,
                }[slot.kind]
            if value in slot.choices:
                genome[i] = slot.choices.index(value)
        return genome


def build_space(model: LoadedModel, options: SpaceOptions | None = None) -> SearchSpace:
    """Slots for every choice the model and the options allow."""
    from hanasc.passes.depth import residual_blocks
    from hanasc.passes.width import channel_groups

    options = options or SpaceOptions()
    slots: list[Slot] = []
    if options.mode in ("joint", "quant"):
        precisions = ((32, 32), *[p for p in options.precisions if p != (32, 32)])
        for layer in model.layers:
            slots.append(Slot(f"{layer.name}:precision", "precision", (layer.name,), precisions))
    if options.mode in ("joint", "arch"):
        func = model.mod["main"]
        for layer in model.layers:
            if layer.op == "conv" and layer.kernel and max(layer.kernel) > 1:
                slots.append(Slot(f"{layer.name}:separable", "separable", (layer.name,), (False, True)))
            if layer.kernel and layer.kernel[0] == layer.kernel[-1] and layer.kernel[0] > 3:
                slots.append(Slot(f"{layer.name}:kernel", "kernel", (layer.name,), (None, 3)))
        widths = (1.0, *[w for w in options.widths if w != 1.0])
        for group in channel_groups(func, model.mod):
            if group.prunable:  # coupled layers (producers and their depthwise chain) share one gene
                slots.append(Slot(f"{group.name}:width", "width", tuple(group.layers), widths))
        for block in residual_blocks(func):
            slots.append(Slot(f"{block.name}:skip", "skip", (block.name,), (False, True)))
    return SearchSpace(slots)
