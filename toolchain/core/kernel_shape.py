"""The shape of one conv or dense kernel: the vocabulary the choice kinds and the cost sweep share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KernelShape:
    """One conv or dense kernel: NCHW input, output channels, kernel, stride, groups, dtype (the fields of
    the kinds' ``passes.kinds.KernelSpec`` and the cost sweep's ``cost_models.sweep.LayerShape``)."""

    cin: int
    cout: int
    h: int
    w: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    dense: bool = False
    dtype: str = "float32"
