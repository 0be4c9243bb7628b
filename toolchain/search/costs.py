"""Costs of a genome during search: latency, memory and energy from per-layer fused kernels.

Materializing and lowering a whole network per candidate takes seconds; search evaluates thousands. So each
layer's kernels under a choice (its precision, kernel size, separable form, input and output widths) are
built as a small Relax module the way the passes materialize them (``cost_models.sweep.layer_module``),
lowered once with the target's fusion passes, and timed by the target's cost model: a measured profile,
the XGBoost latency model, or the roofline prior (the same order as ``cost_models.estimate``). The kernels
that are not layers (pooling, unfused adds) keep the original network's time. The sum is scaled by factors
fitted to whole-model measurements (the original, uniform int8 on the host, and every verified candidate),
one for float and one for int8 kernels once the measurements can tell them apart: the cost model learns
from each miss.

Where the target's prior was calibrated for the device (``hanasc calibrate --device``), each kernel's prior
time is multiplied by its kind's factor and the per-call overhead is added; the latency the search sees is
then the upper end of the one-sided ``budget_confidence`` interval from the calibration's held-out error,
so a budget counts as met only when that upper bound is under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hanasc.core.layers import LayerInfo
from hanasc.cost_models.device_prior import DevicePrior
from hanasc.cost_models.efficiency import calibration_key
from hanasc.cost_models.energy import estimate_energy
from hanasc.cost_models.estimate import CostContext, costed_lowering, kernel_times, load_device_calibration
from hanasc.cost_models.kernels import lower_for_costs, lower_to_kernels
from hanasc.cost_models.latency_model import load_latest
from hanasc.cost_models.spec import load_spec
from hanasc.cost_models.sweep import LayerShape, layer_module
from hanasc.cost_models.target_info import get_target
from hanasc.frontend.loading import LoadedModel
from hanasc.passes.channel_groups import channel_groups
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.depth import residual_blocks
from hanasc.passes.kinds import KernelSpec, kinds, precision_only
from hanasc.passes.weights import layer_of_weight
from hanasc.search.space import SearchSpace

LAYER_KINDS = ("conv2d", "depthwise", "group_conv", "dense")


def _shape(s: KernelSpec) -> LayerShape:
    return LayerShape(s.cin, s.cout, s.h, s.w, s.kernel, s.stride, s.groups, s.dense, s.dtype)


@dataclass
class _KernelCost:
    seconds: float
    energy_j: float
    sources: tuple[str, ...]


@dataclass
class Observation:
    """One whole-model measurement the estimate is scaled to (estimate split into float and int8 kernels)."""

    genome: list[int]
    estimated_ms: float
    measured_ms: float
    estimated_int8_ms: float = 0.0


@dataclass
class ConfigCost:
    """Unscaled costs of a Config: kernel seconds (float and int8 layers apart), weight bytes, joules."""

    float_s: float
    int8_s: float
    weight_bytes: float
    energy_j: float
    sources: list[str]

    @property
    def seconds(self) -> float:
        return self.float_s + self.int8_s


@dataclass
class SearchCosts:
    """Callable on genomes: ``(accuracy placeholder-free) -> latency_ms, memory_mb, energy_mj`` arrays."""

    model: LoadedModel
    space: SearchSpace
    target: str
    observations: list[Observation] = field(default_factory=list)
    # dtype ("float32", "int8") -> layer -> seconds, timed inside the shipped artifact (layer_timing)
    shipped: dict[str, dict[str, float]] = field(default_factory=dict)
    device: str | None = None  # whose calibration applies (hanasc calibrate --device); None: "default"
    budget_confidence: float = 0.9  # hanasc.core.budgets.DEFAULT_BUDGET_CONFIDENCE

    def __post_init__(self) -> None:
        ctx = CostContext(device=self.device)
        self._ctx = ctx
        self._cost_target = get_target(self.target)
        self._spec = load_spec(self._cost_target.name, ctx.cache() / "host_spec.json")
        # None for targets no latency model is trained for (profile refuses them: check_profilable)
        self._latency_model = load_latest(self._cost_target.name, root=ctx.models_root())
        # the kernels the latency model predicts: TVM's default lowering, or the shipped build's
        self._lowering = costed_lowering(self._cost_target, self._latency_model)
        self._prior = DevicePrior.for_spec(self._spec, cache=ctx.cache())
        self._device_cal = (
            load_device_calibration(ctx, self._cost_target.name, prior_name=self._prior.name)
            if self._latency_model is None
            else None
        )
        self._upper = (
            self._device_cal.upper(1.0, self.budget_confidence)
            if self._device_cal is not None and self._device_cal.residuals_log
            else 1.0
        )
        self._cache: dict[tuple, _KernelCost] = {}
        self._out_group: dict[str, str] = {}
        self._in_group: dict[str, str] = {}
        for group in channel_groups(self.model.mod["main"], self.model.mod):
            if not group.prunable:
                continue
            for s in group.slices:
                layer = layer_of_weight(s.param)
                if layer is None:
                    continue
                if s.role in ("producer", "depthwise"):
                    self._out_group[layer] = group.name
                if s.role in ("consumer", "depthwise"):
                    self._in_group[layer] = group.name
        self._blocks = {}

        for block in residual_blocks(self.model.mod["main"]):
            self._blocks[block.name] = block.layers
        self._other_s, self._other_j = self._non_layer_kernels()
        self._other_by_dtype: dict[str, float] = {}  # measured non-layer seconds of the uniform artifacts
        self._peak_activation_bytes = self.model.totals.peak_activation_bytes

    # --- kernels -------------------------------------------------------------------------------------------
    def _non_layer_kernels(self) -> tuple[float, float]:
        lowered = lower_for_costs(self.model.mod, self._cost_target.name, self._lowering)
        cost = self._cost_of(lowered.subset(lambda k: k.features.op_kind not in LAYER_KINDS))
        return cost.seconds, cost.energy_j

    def _cost_of(self, lowered) -> _KernelCost:
        with self._ctx.store() as store:
            times = kernel_times(lowered, self._spec, self._latency_model, store, self._prior)
        seconds = sum(t * k.calls for t, k in zip(times.seconds, lowered.kernels, strict=True))
        cal = self._device_cal
        if cal is not None:  # the device calibration's factor per kernel kind, plus its per-call overhead
            seconds = sum(
                cal.factor(calibration_key(k.features)) * t * k.calls + cal.per_call_s * k.calls
                for t, k in zip(times.seconds, lowered.kernels, strict=True)
            )
        return _KernelCost(seconds, estimate_energy(lowered, self._spec).total_j, tuple(times.sources))

    def _shape_cost(self, shape) -> _KernelCost:
        key = ("shape", shape)
        if key not in self._cache:
            shipped = self._lowering == "shipped"
            lowered = lower_to_kernels(
                layer_module(shape, int8_weight_param=shipped), self._cost_target.name, self._lowering
            )
            if shipped:  # the layer's own kernel: the layout and quantize steps around it belong to the
                # network (its non-layer kernels), where consecutive layers share them
                lowered = lowered.subset(lambda k: k.features.op_kind in LAYER_KINDS)
            self._cache[key] = self._cost_of(lowered)
        return self._cache[key]

    def kernel_specs(self, layer: LayerInfo, choice: LayerChoice, r_in: float, r_out: float) -> list:
        """The kernels a layer runs as under ``choice`` and the given widths: the original layer's kernel,
        changed by every choice kind in order (``ChoiceKind.cost_shapes``)."""
        cout = layer.out_shape[1]
        if layer.op == "dense":
            cin = layer.weight_shape[1 if len(layer.weight_shape) == 2 else 0]
            specs = [KernelSpec(cin, cout, 1, 1, dense=True, in_ratio=r_in, out_ratio=r_out)]
        else:
            h, w = layer.in_shape[2], layer.in_shape[3]
            k, stride = layer.kernel[0], layer.stride[0] if layer.stride else 1
            depthwise = layer.op == "depthwise_conv"
            groups = cout if depthwise else layer.groups
            cin = cout if depthwise else layer.in_shape[1]
            spec = KernelSpec(cin, cout, h, w, k, stride, groups, depthwise=depthwise)
            spec.in_ratio, spec.out_ratio = r_in, r_out
            specs = [spec]
        for kind in kinds():
            specs = kind.cost_shapes(layer, choice, specs)
        return specs

    def layer_shapes(self, layer: LayerInfo, choice: LayerChoice, r_in: float, r_out: float) -> list:
        """The kernels (``sweep.LayerShape``) a layer runs as under ``choice`` and the given widths."""
        return [_shape(s) for s in self.kernel_specs(layer, choice, r_in, r_out)]

    # --- per config ----------------------------------------------------------------------------------------
    def _widths(self, config: Config) -> dict[str, float]:
        """Group name -> width (the first layer of a group that sets one)."""
        widths: dict[str, float] = {}
        for layer in self.model.layers:
            group = self._out_group.get(layer.name)
            if group is not None and config.choice(layer.name).width < 1.0:
                widths.setdefault(group, config.choice(layer.name).width)
        return widths

    def use_shipped_times(self, dtype: str, layer_ms: dict[str, float], other_ms: float | None) -> None:
        """Per-layer times measured in the shipped artifact of a uniform precision (``float32`` or
        ``int8``): from now on a layer's cost is its measured time, scaled by the kernel profiles' ratio
        when a choice changes its shape (width, kernel, separable) or its precision has no measurement.
        ``other_ms``: the measured non-layer kernels of that artifact (layout transforms, quantize steps,
        pooling); the float32 run's replace the profiled ones, and with both, a config's non-layer time is
        interpolated by its int8 share (:meth:`_non_layer_seconds`)."""
        self.shipped[dtype] = {name: ms / 1e3 for name, ms in layer_ms.items()}
        if other_ms is not None:
            self._other_by_dtype[dtype] = other_ms / 1e3
        self.observations = [  # their estimates change with the kernel costs
            self._observation(o.genome, o.measured_ms) for o in self.observations
        ]

    def _layer_seconds(self, layer: LayerInfo, choice: LayerChoice, dtype: str, shapes_s: float) -> float:
        """A layer's seconds: measured in the artifact where available, else the kernel profiles'."""
        measured = self.shipped.get(dtype, {}).get(layer.name)
        reference = precision_only(choice)  # the measured shape
        if measured is None and layer.name in self.shipped.get("float32", {}):
            measured = self.shipped["float32"][layer.name]
            reference = LayerChoice()  # fp32: the ratio also carries the precision change
        if measured is None:
            return shapes_s
        base = sum(self._shape_cost(s).seconds for s in self.layer_shapes(layer, reference, 1.0, 1.0))
        return measured * shapes_s / base if base > 0 else measured

    def _non_layer_seconds(self, float_s: float, int8_s: float) -> float:
        """The non-layer kernels' seconds of a config whose layers take ``float_s`` / ``int8_s``: measured in
        the float32 artifact, moved toward the uniform int8 artifact's by the config's int8 share of layer
        time (an int8 network quantizes its input once and moves bytes, not floats, through its layout
        transforms), where both were measured; else the float32 (or profiled) figure."""
        fp32, int8 = self._other_by_dtype.get("float32"), self._other_by_dtype.get("int8")
        if fp32 is None:
            return self._other_s  # the profiled non-layer kernels of the original
        if int8 is None or float_s + int8_s <= 0:
            return fp32
        return fp32 + (int8 - fp32) * int8_s / (float_s + int8_s)

    def config_costs(self, config: Config) -> ConfigCost:
        """Unscaled costs of a Config (int8 layers' kernels apart: their estimate is scaled on its own)."""
        skipped = {layer for b in config.skip for layer in self._blocks.get(b, [])}
        widths = self._widths(config)
        seconds, int8_s, energy, weight_bytes, sources = 0.0, 0.0, self._other_j, 0.0, []
        for layer in self.model.layers:
            if layer.name in skipped:
                continue
            choice = config.choice(layer.name)
            r_in = widths.get(self._in_group.get(layer.name, ""), 1.0)
            r_out = widths.get(self._out_group.get(layer.name, ""), 1.0)
            specs = self.kernel_specs(layer, choice, r_in, r_out)
            dtype = specs[0].dtype  # the layer's own (a pointwise half may compute in float)
            int8 = dtype == "int8"
            shapes_s = 0.0
            for spec in specs:
                cost = self._shape_cost(_shape(spec))
                shapes_s += cost.seconds
                energy += cost.energy_j
                sources.extend(cost.sources)
                n = spec.cout * (spec.cin // spec.groups) * spec.kernel**2
                bits = spec.weight_bits
                weight_bytes += n * bits / 8 + spec.cout * (8 if bits <= 8 else 4)
            layer_s = self._layer_seconds(layer, choice, dtype, shapes_s) if self.shipped else shapes_s
            if int8:
                int8_s += layer_s
            else:
                seconds += layer_s
        seconds += self._non_layer_seconds(seconds, int8_s)
        return ConfigCost(seconds, int8_s, weight_bytes, energy, sources)

    @property
    def scale(self) -> float:
        """Least-squares factor through the origin: measured ≈ scale x estimated (1 without measurements)."""
        if not self.observations:
            return 1.0
        e = np.array([o.estimated_ms for o in self.observations])
        m = np.array([o.measured_ms for o in self.observations])
        return float((e * m).sum() / (e * e).sum())

    @property
    def scales(self) -> tuple[float, float]:
        """(float kernels, int8 kernels) factors: measured ≈ a x float estimate + b x int8 estimate.

        Fitted in relative error (non-negative least squares) once the measurements mix int8 shares enough
        to tell the two apart; the global :attr:`scale` for both otherwise. The kernel model's error is not
        the same for int8 and float kernels (measured here: 2x apart on a 64x64 EfficientNet-Lite0).
        """
        from scipy.optimize import nnls

        scale = self.scale
        if len(self.observations) < 2:
            return scale, scale
        m = np.array([o.measured_ms for o in self.observations])
        q = np.array([o.estimated_int8_ms for o in self.observations])
        f = np.array([o.estimated_ms for o in self.observations]) - q
        share = q / (f + q)
        if share.max() - share.min() < 0.2:
            return scale, scale
        (a, b), _ = nnls(np.stack([f / m, q / m], axis=1), np.ones_like(m))
        if a <= 0 or b <= 0:
            return scale, scale
        return float(a), float(b)

    def observe(self, genome, measured_ms: float) -> None:
        """Learn from a whole-model measurement of ``genome``."""
        self.observations.append(self._observation(genome, measured_ms))

    def _observation(self, genome, measured_ms: float) -> Observation:
        cost = self.config_costs(self.space.decode(np.asarray(genome)))
        genes = [int(g) for g in genome]
        return Observation(genes, cost.seconds * 1e3, float(measured_ms), cost.int8_s * 1e3)

    def source(self) -> dict:
        """Where the latency figures come from (for reports)."""
        model = self._latency_model
        base = (
            {"kernels": "XGBoost latency model", **model.meta.provenance()}
            if model is not None
            else {"kernels": self._prior.name}
        )
        calibrated = bool(self.observations) or bool(self.shipped)
        shipped = (
            f"; per-layer times measured in the shipped artifact ({', '.join(sorted(self.shipped))}), "
            "changed shapes scaled by the kernel profiles' ratio"
            if self.shipped
            else ""
        )
        cal = self._device_cal
        device = (
            {
                "device_calibration": cal.describe(),
                "latency_objective": f"upper end of the one-sided {self.budget_confidence:.0%} interval "
                f"(x{self._upper:.3f} of the estimate, from the calibration's held-out error)",
            }
            if cal is not None
            else {}
        )
        return {
            "source": "predicted" if (model is not None or calibrated or cal is not None) else "prior",
            "model": "sum of per-layer fused kernels + non-layer kernels of the original, x scale "
            f"(float and int8 kernels scaled apart once measurements allow){shipped}",
            **base,
            "scale": round(self.scale, 4),
            "scale_float_int8": [round(v, 4) for v in self.scales],
            "whole_model_measurements": len(self.observations),
            **device,
        }

    def __call__(self, genomes: np.ndarray):
        """(latency_ms, memory_mb, energy_mj) arrays for a batch of genomes (accuracy is the predictor's)."""
        lat, mem, energy = [], [], []
        a, b = self.scales
        for genome in np.atleast_2d(genomes):
            cost = self.config_costs(self.space.decode(genome))
            lat.append((cost.float_s * a + cost.int8_s * b) * 1e3 * self._upper)
            mem.append((cost.weight_bytes + self._peak_activation_bytes) / 2**20)
            energy.append(cost.energy_j * 1e3)
        return np.array(lat), np.array(mem), np.array(energy)
