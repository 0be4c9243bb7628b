"""The target registry: every target hanasc compiles for, what it can run, and how it builds a bundle.

Looking a target up imports no TVM; each target's module is imported when its bundle is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hanasc.core.errors import HanascError

OPS = ("separable", "width", "kernel", "skip")  # the architecture choices of the search space


class UnknownTargetError(HanascError):
    """A target name that is not registered."""


class UnsupportedChoiceError(HanascError):
    """A Config asks a target for something it cannot run."""


@dataclass(frozen=True)
class Choices:
    """What a target can run.

    ``compute_weight_bits``: weight widths its kernels compute in (32 fp32, 16 fp16, 8 int8).
    ``storage_weight_bits``: widths only stored (packed/cast), widened before the kernel runs.
    ``act_bits``: activation widths it computes in. ``ops``: architecture choices it accepts.
    """

    compute_weight_bits: tuple[int, ...]
    storage_weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    ops: tuple[str, ...] = OPS

    @property
    def weight_bits(self) -> tuple[int, ...]:
        return tuple(sorted({*self.compute_weight_bits, *self.storage_weight_bits}, reverse=True))


@dataclass(frozen=True)
class TargetInfo:
    """One registered target.

    ``build_bundle(...) -> BundleReport`` takes what ``bundle_input`` names:

    - ``"relax"``: ``build_bundle(mod, out_dir, probe_inputs)`` with ``mod`` a hanasc Relax IRModule,
      weights as parameters (integer weights are then bound after fusion and stay packed in the library,
      :mod:`hanasc.targets.late_binding`) or already bound, and ``probe_inputs`` the inputs whose outputs
      the bundle records;
    - ``"onnx"``: ``build_bundle(onnx_model, precision_plan, calibration_inputs, out_dir,
      latency_estimate=None)`` (the OpenVINO targets, see ``hanasc.targets.vpu``).

    ``tvm_target_json`` is None for targets TVM does not compile for. ``layer_choices(op)`` narrows
    ``choices`` for one layer kind (``LayerInfo.op``) where a target allows less for it.
    """

    name: str
    description: str
    tvm_target_json: dict | None
    choices: Choices
    load_builder: Callable[[], Callable]  # imports the target's module on first use
    aliases: tuple[str, ...] = ()
    bundle_input: str = "relax"
    checked_here: str = ""
    checked_on_device: str = ""
    layer_choices: Callable[[str], Choices] | None = None
    tvm_target_factory: Callable[[], Any] | None = None
    kernels: Callable[[], str] | None = None  # how each precision is computed (`hanasc targets`)
    runs_here: bool = False  # its artifacts run (and are measured) on this machine

    def build_bundle(self, *args, **kwargs) -> Any:
        """Build this target's bundle (arguments: see the class docstring)."""
        return self.load_builder()(*args, **kwargs)

    def choices_for(self, layer_op: str) -> Choices:
        return self.layer_choices(layer_op) if self.layer_choices else self.choices

    def tvm_target(self):
        """The TVM target (``None`` when TVM does not compile for this target)."""
        if self.tvm_target_json is None:
            return None
        if self.tvm_target_factory is not None:
            return self.tvm_target_factory()
        import tvm

        return tvm.target.Target(self.tvm_target_json)


def _lazy(module: str, attr: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module(module), attr)


def _builtin_targets() -> list[TargetInfo]:
    from hanasc.targets import cortex_a78, jetson_orin  # no TVM at import time

    return [
        TargetInfo(
            name="host",
            description="this machine's CPU through TVM's LLVM backend (mcpu detected at build time)",
            tvm_target_json={"kind": "llvm"},
            # No native fp16 arithmetic on x86 here: fp16 weights are stored and cast back to fp32.
            choices=Choices(compute_weight_bits=(32, 8), storage_weight_bits=(16, 4, 2), act_bits=(32, 8)),
            load_builder=_lazy("hanasc.targets.host_bundle", "build_bundle"),
            tvm_target_factory=lambda: _lazy("hanasc.targets.host", "tvm_target")()(),
            checked_here="everything: build, run, measure",
            runs_here=True,
            kernels=lambda: _lazy("hanasc.targets.x86_int8", "host_kernel_paths")()(),
        ),
        TargetInfo(
            name="cortex-a78",
            aliases=("a78", "arm"),
            description="Arm Cortex-A78 (aarch64, NEON, dotprod, fp16): cross-compiled library + C++ runner",
            tvm_target_json=cortex_a78.TARGET_JSON,
            choices=Choices(
                compute_weight_bits=(32, 16, 8), storage_weight_bits=(4, 2), act_bits=(32, 16, 8)
            ),
            load_builder=_lazy("hanasc.targets.cortex_a78", "build_bundle"),
            checked_here="cross build; numerics under qemu-aarch64 vs the host build; NEON/sdot in the code",
            checked_on_device="latency",
            kernels=lambda: (
                "int8 convs (groups=1): sdot kernels, 4 output x 4 input channels a step; int8 "
                "depthwise: NEON code widened to int32; fp16: half precision arithmetic compiled with "
                "+fullfp16; 4/2-bit: unpacked to int8 in the graph"
            ),
        ),
        TargetInfo(
            name="jetson-orin",
            aliases=("orin",),
            description="NVIDIA Jetson Orin: CUDA sm_87 kernels with an aarch64 A78 host",
            tvm_target_json=jetson_orin.TARGET_JSON,
            choices=Choices(
                compute_weight_bits=(32, 16, 8), storage_weight_bits=(4, 2), act_bits=(32, 16, 8)
            ),
            load_builder=_lazy("hanasc.targets.jetson_orin", "build_bundle"),
            checked_here="build; sm_87 PTX/cubin; launch bounds, shared memory, registers within limits",
            checked_on_device="numerics and latency (or on a lent GPU as plain cuda)",
            kernels=lambda: (
                "int8 GEMMs and convs: dp4a (4 byte products per instruction, int32 sums); fp16 GEMMs "
                "with every size > 64: tensor cores (wmma); int8 depthwise, int8 tensor cores: not yet "
                "(plain CUDA); the rest: dlight's default schedules"
            ),
        ),
    ]


# --- Targets owned by other modules ------------------------------------------------------------------------
# Each function here imports another module lazily and returns its targets as TargetInfo. If the module (or
# a package it needs at import time) is missing, its targets are left out and asking for one says why.
# To register more targets: add a function ``_xxx_targets() -> list[TargetInfo]`` and list it below.


def _vpu_targets() -> list[TargetInfo]:
    """The OpenVINO targets of ``hanasc.targets.vpu``: vpu (alias of npu3720), npu3720, npu4000, myriadx."""
    from hanasc.targets import vpu

    infos = []
    for target in vpu.TARGETS.values():

        def choices_for(op: str, target=target) -> Choices:
            allowed = target.allowed_choices(op)
            return Choices(
                compute_weight_bits=tuple(b for b in allowed["w_bits"] if b >= 8),
                storage_weight_bits=tuple(b for b in allowed["w_bits"] if b < 8),
                act_bits=tuple(allowed["a_bits"]),
            )

        infos.append(
            TargetInfo(
                name=target.name,
                aliases=tuple(target.aliases),
                description=target.description,
                tvm_target_json=None,
                choices=choices_for("dense"),
                layer_choices=choices_for,
                load_builder=lambda target=target: target.build_bundle,
                bundle_input="onnx",
                checked_here="convert, audit per-layer precisions, numerics on OpenVINO's CPU plugin",
                checked_on_device="the device blob, numerics and latency on the VPU/NPU",
                kernels=lambda: "OpenVINO's plugin picks the kernels for the per-layer precisions",
            )
        )
    return infos


OPTIONAL_TARGETS: tuple[tuple[str, Callable[[], list[TargetInfo]]], ...] = (
    ("hanasc.targets.vpu", _vpu_targets),
)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Registry:
    """Targets by name and alias, plus the optional modules that could not be imported (name -> reason)."""

    targets: dict[str, TargetInfo]
    aliases: dict[str, str]
    unavailable: dict[str, str]


def load_registry(optional=OPTIONAL_TARGETS) -> Registry:
    """Build the registry: the built-in targets, then the targets of each optional module."""
    infos = _builtin_targets()
    unavailable: dict[str, str] = {}
    for module, loader in optional:
        try:
            infos.extend(loader())
        except ModuleNotFoundError as exc:
            unavailable[module] = f"no module {exc.name}"
    targets: dict[str, TargetInfo] = {}
    aliases: dict[str, str] = {}
    for info in infos:
        for key in (info.name, *info.aliases):
            if key in targets or key in aliases:
                raise ValueError(f"target name '{key}' registered twice")
        targets[info.name] = info
        aliases.update({alias: info.name for alias in info.aliases})
    return Registry(targets, aliases, unavailable)


def all_targets(registry: Registry | None = None) -> list[TargetInfo]:
    """Every registered target, in registration order."""
    return list((registry or load_registry()).targets.values())


def get_target(name: str, registry: Registry | None = None) -> TargetInfo:
    """The target called ``name`` (or one of its aliases); a HanascError listing the known names otherwise."""
    registry = registry or load_registry()
    key = name.strip().lower()
    key = registry.aliases.get(key, key)
    if key in registry.targets:
        return registry.targets[key]
    known = ", ".join(
        info.name + (f" ({', '.join(info.aliases)})" if info.aliases else "")
        for info in registry.targets.values()
    )
    why = "".join(f"; {module} not loaded: {reason}" for module, reason in registry.unavailable.items())
    raise UnknownTargetError(f"unknown target '{name}'; known: {known}{why}")


def check_choices(target: TargetInfo | str, config, layers) -> None:
    """Raise UnsupportedChoiceError for the first layer choice ``target`` cannot run.

    ``config``: a ``hanasc.passes.config.Config``; ``layers``: the layer table (``LayerInfo`` list). Bits of
    32 mean "leave the layer as it is" and are always accepted: each target runs those in its own default
    precision (fp32 on the TVM targets, FP16 on the VPUs).
    """
    info = get_target(target) if isinstance(target, str) else target
    by_name = {layer.name: layer for layer in layers}
    for name, choice in config.layers.items():
        where = f"target '{info.name}', layer '{name}'"
        layer = by_name.get(name)
        if layer is None:
            raise UnsupportedChoiceError(f"{where}: no such layer in the model")
        allowed = info.choices_for(layer.op)
        if choice.w_bits != 32 and choice.w_bits not in allowed.weight_bits:
            raise UnsupportedChoiceError(
                f"{where}: w_bits={choice.w_bits} not supported (allowed: {_join(allowed.weight_bits)})"
            )
        if choice.a_bits != 32 and choice.a_bits not in allowed.act_bits:
            raise UnsupportedChoiceError(
                f"{where}: a_bits={choice.a_bits} not supported (allowed: {_join(allowed.act_bits)})"
            )
        for op, used in (
            ("separable", choice.separable),
            ("width", choice.width != 1.0),
            ("kernel", choice.kernel is not None),
        ):
            if used and op not in allowed.ops:
                raise UnsupportedChoiceError(f"{where}: '{op}' changes are not supported on this target")
        if choice.separable and layer.op != "conv":
            raise UnsupportedChoiceError(f"{where}: separable applies to standard convs, not {layer.op}")
        if choice.kernel is not None and layer.op == "dense":
            raise UnsupportedChoiceError(f"{where}: kernel shrinking applies to convs, not dense layers")
    if config.skip and "skip" not in info.choices.ops:
        raise UnsupportedChoiceError(f"target '{info.name}': skipping blocks is not supported")


def _join(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)
