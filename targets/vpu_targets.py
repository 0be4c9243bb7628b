"""The OpenVINO targets: Myriad X (FP16), NPU 3720 (Meteor Lake; alias ``vpu``), NPU 4000 (Lunar Lake)."""

from __future__ import annotations

from hanasc.targets.openvino_family import OpenVinoTarget

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
NPU3720 = OpenVinoTarget(
    name="npu3720",
    aliases=("vpu", "meteor-lake", "mtl"),
    precisions=("fp16", "int8", "int4"),
    int4_layer_ops=("dense",),
    ops_key="npu",
    device="NPU",
    architecture="3720",
    description="Intel NPU 3720 (Core Ultra Series 1, Meteor Lake): FP16, INT8 W8A8, INT4 dense weights",
)
NPU4000 = OpenVinoTarget(
    name="npu4000",
    aliases=("lunar-lake", "lnl"),
    precisions=("fp16", "int8", "int4"),
    int4_layer_ops=("dense",),
    ops_key="npu",
    device="NPU",
    architecture="4000",
    description="Intel NPU 4 (Core Ultra Series 2, Lunar Lake): FP16, INT8 W8A8, INT4 dense weights",
)
TARGETS = (MYRIADX, NPU3720, NPU4000)
