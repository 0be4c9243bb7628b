"""The one target contract: what a target is (data) and what the compile job asks of it (methods).

A target is a frozen dataclass: its name, aliases and description, the choices it runs, its cost facts
and its capabilities. The compile job never branches on those facts: it calls the methods here
(:meth:`Target.measurer`, :meth:`Target.check_build`, :meth:`Target.bundle`, ...), and each family
(:mod:`hanasc.targets.tvm_family`, :mod:`hanasc.targets.openvino_family`) implements them. Defining a
target imports no TVM; heavy modules are named as ``"module:function"`` strings and imported on first use.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanasc.core.errors import HanascError

OPS = ("separable", "width", "kernel", "skip")  # the architecture choices of the search space
SPEC_DIR = Path(__file__).parent / "specs"  # hardware specs: peak ops/s, bandwidth, clock, energy


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
class CostFacts:
    """What the cost models need: the compiler, the device kernels run on and the hardware spec file."""

    compiler: str  # "tvm-llvm" | "tvm-cuda" | "openvino"
    device_type: str  # TVM device of the kernels: "cpu" | "cuda"; "npu" for OpenVINO-only targets
    cross_cc: str | None = None  # cross compiler for export_library when the device is not this machine
    spec_file: str | None = None  # the spec JSON (peak ops/s, bandwidth, clock, ...); None: specs/<name>.json
    prior_lowering: str = "default"  # kernels the prior reads: "shipped" (hanasc's CPU lowering) | "default"

    @property
    def compiles_with_tvm(self) -> bool:
        return self.compiler.startswith("tvm")

    @property
    def runs_on_this_cpu(self) -> bool:
        """Its kernels are compiled for and run on this machine's CPU (no cross compiler, no GPU)."""
        return self.compiles_with_tvm and self.device_type == "cpu" and self.cross_cc is None


@dataclass(frozen=True)
class Capabilities:
    """What a target can do here, as data (the families read it; the compile job calls methods)."""

    runs_here: bool = False  # its artifacts run (and are measured) on this machine
    bundle_from: str = "relax"  # its bundle's input: "relax" (the materialized module) | "onnx"


DEVICE_ONLY = Capabilities()  # a device target: its artifacts run on the device only


@dataclass(frozen=True)
class Measurer:
    """Where a target's compiled models are measured: on this machine (``session`` None) or on the device
    through a TVM RPC session (``hanasc.cost_models.profiler.Session``)."""

    target: str
    session: Any = None
    host_library: bool = False  # the executable measured is this machine's library (shipped as model.so)

    @property
    def local(self) -> bool:
        return self.session is None

    def where(self, rpc: str | None) -> str:
        return "the host" if self.local else f"{self.target} over RPC at {rpc}"


@dataclass
class BundleInputs:
    """What any target's bundle is built from; each target reads what it needs.

    ``relax_mod``: the materialized Relax module (weights as parameters: integer weights stay packed in
    the library) and ``probe_inputs``, whose outputs the bundle records. ``onnx``: called only by targets
    built from ONNX, returns ``(onnx_model, config)``, the cleaned ONNX with the Config's architecture
    choices written in and the Config renamed to its layers. ``calibration``: samples calibrating INT8.
    ``executable``: ``relax_mod`` already built for this target where the caller has it (a target that
    runs here reuses it instead of building the model a second time).
    """

    out_dir: Path
    relax_mod: Any = None
    probe_inputs: Any = None
    onnx: Callable[[], tuple[Any, Any]] | None = None
    calibration: Any = None
    latency_estimate: dict | None = None
    executable: Any = None


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` string names (the module imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Target(ABC):
    """One target hanasc compiles for. Subclasses: one per family (LLVM CPU, CUDA, OpenVINO)."""

    name: str
    description: str
    choices: Choices
    cost: CostFacts
    caps: Capabilities = DEVICE_ONLY
    aliases: tuple[str, ...] = ()
    tvm_target_json: dict | None = None
    kernel_notes: str = ""  # how each precision is computed (`hanasc targets`)
    kernel_notes_from: str | None = None  # "module:function" returning them, when they need TVM
    checked_here: str = ""
    checked_on_device: str = ""

    @property
    def bundle_input(self) -> str:
        return self.caps.bundle_from

    def choices_for(self, layer_op: str) -> Choices:
        """``choices`` narrowed for one layer kind (``LayerInfo.op``) where the target allows less."""
        return self.choices

    def kernels(self) -> str:
        return resolve(self.kernel_notes_from)() if self.kernel_notes_from else self.kernel_notes

    @property
    def spec_path(self) -> Path:
        return Path(self.cost.spec_file) if self.cost.spec_file else SPEC_DIR / f"{self.name}.json"

    # --- compile ----------------------------------------------------------------------------------------
    @abstractmethod
    def tvm_target(self):
        """The TVM target (``None`` when TVM does not compile for this target)."""

    @abstractmethod
    def lower(self, database: bool = True):
        """Its lowering pipeline (:func:`hanasc.targets.pipelines.tuned_pipeline`)."""

    @abstractmethod
    def build(self, mod):
        """Compile a hanasc Relax module into its executable (integer weights late-bound)."""

    @abstractmethod
    def check_build(self, mod, log: Callable[[str], None]) -> None:
        """Check before the search that ``mod`` builds (fail in seconds, not after it)."""

    @abstractmethod
    def check_tuning(self, rpc: str | None) -> None:
        """Raise HanascError when MetaSchedule cannot tune for it (``rpc``: the device's HOST:PORT)."""

    def check_tuned_weights(self, source: str) -> None:
        """Raise HanascError when fine-tuned weights (from ``source``) cannot reach its bundle."""
        return None

    def shipped_ranges(self, ranges):
        """The activation ranges as its bundle uses them: with the statistics hanasc's recovery (bias
        correction, refits) reads, where that recovery ships."""
        return ranges

    # --- measure ----------------------------------------------------------------------------------------
    @abstractmethod
    def measurer(self, session) -> Measurer | None:
        """Where its models are measured with this RPC ``session`` (or none); None: not measurable."""

    # --- ship -------------------------------------------------------------------------------------------
    @abstractmethod
    def bundle(self, inputs: BundleInputs):
        """Build its deployable bundle in ``inputs.out_dir`` (a ``hanasc.targets.bundle.BundleReport``)."""

    def device_bundle(self, inputs: BundleInputs):
        """The bundle shipped beside the host library; None where the host library is the artifact."""
        return None if self.caps.runs_here else self.bundle(inputs)

    # --- costs ------------------------------------------------------------------------------------------
    def cost_tvm_target(self):
        """The TVM target its kernels are costed for (what ships)."""
        return self.tvm_target()

    def cost_key(self) -> str:
        """A short, stable string naming the code generator setup (part of every kernel signature)."""
        target = self.cost_tvm_target()
        return f"{self.name}:{target.kind.name}:{target.attrs.get('mcpu', '')}:{target.attrs.get('arch', '')}"

    def check_profilable(self, asked: str) -> None:
        """Raise HanascError when its kernels cannot be profiled (``asked``: the name the user gave)."""
        return None

    def times_in_place(self, remote: bool) -> bool:
        """Whether its kernels can be timed inside the shipped artifact on this CPU (not over RPC)."""
        return not remote and self.cost.runs_on_this_cpu

    def check_networks_in_place(self, remote: bool) -> None:
        """Raise HanascError unless whole networks can be timed in place on this CPU."""
        if not self.times_in_place(remote):
            raise HanascError(
                f"networks are timed in place on this CPU only; target '{self.name}' runs elsewhere "
                "(profile its kernels instead)"
            )
