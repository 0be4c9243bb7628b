"""The OpenVINO targets: Myriad X (FP16), NPU 3720 (Meteor Lake; alias ``vpu``), NPU 4000 (Lunar Lake)."""

from __future__ import annotations

from hanasc.targets.openvino_family import OpenVinoTarget


def _npu(name: str, aliases: tuple[str, ...], architecture: str, description: str) -> OpenVinoTarget:
    """An Intel NPU generation: OpenVINO's ``NPU`` device, FP16, INT8 W8A8 and INT4 dense weights."""
    return OpenVinoTarget(
        name=name,
        aliases=aliases,
        precisions=("fp16", "int8", "int4"),
        int4_layer_ops=("dense",),
        ops_key="npu",
        device="NPU",
        architecture=architecture,
        description=description,
    )


MYRIADX = OpenVinoTarget(
    name="myriadx",
    aliases=("myriad", "ncs2"),
    precisions=("fp16",),
    int4_layer_ops=(),
    ops_key="myriadx",
    device="MYRIAD",
    architecture=None,
    description="Intel Movidius Myriad X VPU (Neural Compute Stick 2): FP16 only, OpenVINO <= 2022.3",
)
NPU3720 = _npu(
    "npu3720",
    ("vpu", "meteor-lake", "mtl"),
    "3720",
    "Intel NPU 3720 (Core Ultra Series 1, Meteor Lake): FP16, INT8 W8A8, INT4 dense weights",
)
NPU4000 = _npu(
    "npu4000",
    ("lunar-lake", "lnl"),
    "4000",
    "Intel NPU 4 (Core Ultra Series 2, Lunar Lake): FP16, INT8 W8A8, INT4 dense weights",
)
TARGETS = (MYRIADX, NPU3720, NPU4000)
