"""The targets OpenVINO compiles for: Intel VPUs / NPUs (Myriad X, NPU 3720, NPU 4000).

TVM does not compile for them: the bundle is built from the ONNX model with per-layer precisions
(:mod:`hanasc.targets.vpu`), nothing is tuned or measured here, and the cost models read the kernels'
features only (lowered for the host CPU). Importing this module imports neither TVM nor OpenVINO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hanasc.core.errors import HanascError
from hanasc.core.layers import layer_table
from hanasc.targets import host, vpu
from hanasc.targets.base import BundleInputs, Capabilities, Choices, CostFacts, Measurer, Target
from hanasc.targets.vpu_plan import PRECISIONS, VpuPlanError

FP16_ONLY = Choices((16,), (), (16,))
OPENVINO_COST = CostFacts("openvino", "npu")
FROM_ONNX = Capabilities(bundle_from="onnx")


@dataclass(frozen=True)
class OpenVinoTarget(Target):
    """One VPU generation: what it runs, which supported-op list applies, where the blob is built."""

    choices: Choices = FP16_ONLY  # set from the generation's precisions (dense layers)
    cost: CostFacts = OPENVINO_COST
    caps: Capabilities = FROM_ONNX
    precisions: tuple[str, ...] = ("fp16",)
    int4_layer_ops: tuple[str, ...] = ()  # layer kinds (LayerInfo.op) that may take INT4 weights
    ops_key: str = "npu"  # entry of specs/vpu_ops.json
    device: str = "NPU"  # OpenVINO device name on the target machine
    architecture: str | None = None  # value of the NPU's DEVICE_ARCHITECTURE property
    checked_here: str = "convert, audit per-layer precisions, numerics on OpenVINO's CPU plugin"
    checked_on_device: str = "the device blob, numerics and latency on the VPU/NPU"
    kernel_notes: str = "OpenVINO's plugin picks the kernels for the per-layer precisions"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", self.choices_for("dense"))

    @property
    def is_npu(self) -> bool:
        return self.device == "NPU"

    def allowed_choices(self, layer_op: str) -> dict[str, tuple[int, ...]]:
        """The LayerChoice bits this generation can honour for a layer kind (for the search space)."""
        w_bits: tuple[int, ...] = (16,)
        a_bits: tuple[int, ...] = (16,)
        if "int8" in self.precisions:
            w_bits, a_bits = (16, 8), (16, 8)
        if "int4" in self.precisions and layer_op in self.int4_layer_ops:
            w_bits = (*w_bits, 4)
        return {"w_bits": w_bits, "a_bits": a_bits}

    def choices_for(self, layer_op: str) -> Choices:
        allowed = self.allowed_choices(layer_op)
        return Choices(
            compute_weight_bits=tuple(b for b in allowed["w_bits"] if b >= 8),
            storage_weight_bits=tuple(b for b in allowed["w_bits"] if b < 8),
            act_bits=tuple(allowed["a_bits"]),
        )

    def plan_from_config(self, config, layers) -> dict[str, str]:
        """Per-layer precision from a :class:`hanasc.passes.config.Config` and the layer table.

        FP16 unless w_bits <= 8 and a_bits == 8 (INT8 W8A8); w_bits <= 4 with float activations on a
        dense layer gives INT4 weights where this generation allows them.
        """
        plan = {}
        for layer in layers:
            choice = config.choice(layer.name)
            if (
                choice.w_bits <= 4
                and choice.a_bits != 8
                and "int4" in self.precisions
                and layer.op in self.int4_layer_ops
            ):
                plan[layer.name] = "int4"
            elif choice.w_bits <= 8 and choice.a_bits == 8 and "int8" in self.precisions:
                plan[layer.name] = "int8"
            else:
                plan[layer.name] = "fp16"
        return plan

    def validate_plan(self, plan: dict[str, str], layers) -> dict[str, str]:
        """The full plan (unnamed layers stay FP16); raises :class:`VpuPlanError` on the first problem."""
        kinds = {layer.name: layer.op for layer in layers}
        full = dict.fromkeys(kinds, "fp16")
        for name, precision in plan.items():
            if name not in kinds:
                known = ", ".join(list(kinds)[:5]) + (", ..." if len(kinds) > 5 else "")
                raise VpuPlanError(f"{self.name}: plan names unknown layer '{name}' (layers: {known})")
            if precision not in PRECISIONS:
                raise VpuPlanError(
                    f"{self.name}: layer '{name}': precision '{precision}' unknown "
                    f"(use {', '.join(PRECISIONS)})"
                )
            if precision not in self.precisions:
                raise VpuPlanError(
                    f"{self.name}: layer '{name}': {precision.upper()} is not available on {self.name} "
                    f"({'/'.join(p.upper() for p in self.precisions)} only)"
                )
            if precision == "int4" and kinds[name] not in self.int4_layer_ops:
                raise VpuPlanError(
                    f"{self.name}: layer '{name}' is a {kinds[name]}: INT4 weights are for "
                    f"{'/'.join(self.int4_layer_ops)} layers only"
                )
            full[name] = precision
        return full

    # --- the contract -----------------------------------------------------------------------------------
    def tvm_target(self):
        return None

    def lower(self, database: bool = True):
        raise HanascError(f"target '{self.name}' is not compiled by TVM: OpenVINO lowers it")

    def build(self, mod):
        raise HanascError(f"target '{self.name}' is not compiled by TVM: its bundle is built from ONNX")

    def check_build(self, mod, log: Callable[[str], None]) -> None:
        """Nothing to check before the search: OpenVINO converts the ONNX model when the bundle is built."""

    def check_tuning(self, rpc: str | None) -> None:
        raise HanascError(f"--tune-minutes: target '{self.name}' is not compiled by TVM (nothing to tune)")

    def shipped_ranges(self, ranges):
        """OpenVINO quantizes the bundle itself: hanasc's bias correction and refits would make the simulator
        judge a model that does not ship, so their statistics are dropped."""
        ranges.channel_means = {}
        ranges.covariances = {}
        return ranges

    def check_tuned_weights(self, source: str) -> None:
        raise HanascError(f"{source}: fine-tuned weights cannot reach {self.name}'s bundle (built from ONNX)")

    def measurer(self, session) -> Measurer | None:
        if session is not None:
            raise HanascError(
                f"--rpc: target '{self.name}' is not compiled by TVM; nothing to measure over RPC"
            )
        return None

    def bundle(self, inputs: BundleInputs):
        onnx_model, config = inputs.onnx()
        plan = self.plan_from_config(config, layer_table(onnx_model))
        estimate = inputs.latency_estimate
        return self.build_bundle(onnx_model, plan, inputs.calibration, inputs.out_dir, estimate)

    def build_bundle(self, onnx_model, precision_plan, calibration_inputs, out_dir, latency_estimate=None):
        """Convert, quantize, check and write the bundle (:func:`hanasc.targets.vpu.build_bundle`)."""
        return vpu.build_bundle(
            self, onnx_model, precision_plan, calibration_inputs, out_dir, latency_estimate
        )

    def cost_tvm_target(self):
        """The host CPU's: the kernels of an OpenVINO target are lowered for their features only."""
        return host.tvm_target()

    def cost_key(self) -> str:
        return f"{self.name}:features-only"

    def check_profilable(self, asked: str) -> None:
        raise HanascError(
            f"target '{asked}' is not compiled by TVM: its kernels cannot be profiled (use calibrate)"
        )
