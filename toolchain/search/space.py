"""The search space: slots (one gene each) x choices, decoded into a Config.

Every choice kind (:mod:`hanasc.passes.kinds`) declares its genes and how a gene value is written into a
Config and read back. Quantization genes: one per layer, a (weight bits, activation bits) pair the target
allows. Architecture genes: separable substitution (standard KxK convs), kernel shrink to 3x3 (K > 3),
width per channel group (coupled layers share one gene), skip per identity-residual block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import WIDTHS, Config, LayerChoice
from hanasc.passes.kinds import Slot, kinds

__all__ = ["DEFAULT_PRECISIONS", "SearchSpace", "Slot", "SpaceOptions", "build_space"]

DEFAULT_PRECISIONS: tuple[tuple[int, int], ...] = (
    (32, 32),
    (16, 16),
    (8, 8),
    (8, 32),
    (4, 8),
    (4, 32),
    (2, 8),
)


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
        by_gene = {kind.gene: kind for kind in kinds()}
        layers: dict[str, LayerChoice] = {}
        skip: list[str] = []
        for slot, gene in zip(self.slots, genome, strict=True):
            by_gene[slot.kind].decode(slot, slot.choices[int(gene)], layers, skip)
        return Config(layers={k: v for k, v in layers.items() if not v.is_identity()}, skip=skip)

    def encode(self, config: Config) -> np.ndarray:
        """The genome of a Config (choices outside the space fall back to the original)."""
        by_gene = {kind.gene: kind for kind in kinds()}
        genome = self.identity()
        for i, slot in enumerate(self.slots):
            value = by_gene[slot.kind].encode(slot, config)
            if value in slot.choices:
                genome[i] = slot.choices.index(value)
        return genome


def build_space(model: LoadedModel, options: SpaceOptions | None = None) -> SearchSpace:
    """Slots for every choice the model and the options allow, ordered by each kind's ``gene_rank``."""
    options = options or SpaceOptions()
    keyed = []
    for kind in kinds():
        if options.mode in kind.modes:
            for position, slot in kind.slots(model, options):
                keyed.append(((kind.gene_rank[0], position, kind.gene_rank[1]), slot))
    keyed.sort(key=lambda item: item[0])
    return SearchSpace([slot for _, slot in keyed])
