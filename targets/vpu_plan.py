"""What a VPU bundle's precision plan is made of: the precisions a layer can take, the error a plan the
generation cannot honour raises, and what the bundle builder (:mod:`hanasc.targets.vpu`) reads of a
generation (:class:`VpuGeneration`, implemented by :class:`hanasc.targets.openvino_family.OpenVinoTarget`).
"""

from __future__ import annotations

from typing import Protocol

from hanasc.core.errors import HanascError

PRECISIONS = ("fp16", "int8", "int4")


class VpuPlanError(HanascError):
    """A precision plan the VPU generation cannot honour (unknown layer, precision or op)."""


class VpuGeneration(Protocol):
    """One VPU generation as its bundle is built and checked."""

    name: str
    aliases: tuple[str, ...]
    description: str
    precisions: tuple[str, ...]
    ops_key: str  # entry of specs/vpu_ops.json
    device: str  # OpenVINO device name on the target machine
    architecture: str | None  # value of the NPU's DEVICE_ARCHITECTURE property

    @property
    def is_npu(self) -> bool: ...

    def validate_plan(self, plan: dict[str, str], layers) -> dict[str, str]: ...
