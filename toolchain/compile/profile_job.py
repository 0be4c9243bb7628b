"""``hanasc profile``: sweep kernels on a target within a time budget, store them, train the latency model.

The sweep is every layer choice of a model's search space (if a model is given) interleaved with random
shapes; kernels already in the store for this (target, TVM version, device) are reused, not re-timed. A few
chains of swept layers are also measured end to end, so the per-call runtime overhead can be fitted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hanasc.core.errors import HanascError
from hanasc.cost_models import sweep
from hanasc.cost_models.efficiency_probe import shipped_kernel_samples
from hanasc.cost_models.kernels import lower_to_kernels
from hanasc.cost_models.latency_calibration import fit_calibration
from hanasc.cost_models.latency_model import train
from hanasc.cost_models.network_profile import network_rows, profile_network, train_on_networks
from hanasc.cost_models.profiler import Session, Timing, TimingConfig, time_kernel
from hanasc.cost_models.store import KernelRow, ModelRow, ProfileStore, tvm_version
from hanasc.cost_models.target_info import get_target
from hanasc.cost_models.timing import measure_model, module_hash
from hanasc.frontend.loading import load_model
from hanasc.search.architecture_samples import sample_architectures

Progress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass
class ProfileSummary:
    target: str
    device: str
    db: Path
    measured: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    shipped: int = 0  # of the measured kernels, those timed inside the shipped artifact (the rest alone)
    networks_measured: int = 0  # whole sampled architectures timed kernel by kernel (ProfilePlan.networks)
    chains_measured: int = 0
    seconds: float = 0.0
    model_version: str | None = None
    model_samples: int = 0

    def table(self) -> str:
        rows = [
            ("target", self.target),
            ("device", self.device),
            ("store", str(self.db)),
            ("kernels measured", f"{self.measured} ({self.shipped} inside the shipped build)"),
            ("kernels reused", str(self.reused)),
            ("kernels failed", str(len(self.failed))),
            ("whole-model chains measured", str(self.chains_measured)),
            ("networks timed in place", str(self.networks_measured)),
            ("elapsed", f"{self.seconds:.1f} s"),
            (
                "latency model",
                f"{self.model_version} ({self.model_samples} kernels)" if self.model_version else "-",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass
class ProfilePlan:
    """What ``hanasc profile`` sweeps: ``model``'s search space (an ONNX file) interleaved with
    ``random_kernels`` random shapes, or ``layers`` instead; ``chains`` whole-model chains of swept layers
    (the per-call overhead); the XGBoost model trained when ``train_model``; all within ``budget_minutes``."""

    model: str | Path | None = None
    budget_minutes: float = 10.0
    random_kernels: int = 200
    chains: int = 6
    train_model: bool = True
    seed: int = 0
    layers: list[sweep.LayerShape] | None = None
    # time host kernels inside the shipped build of each swept layer (off: measured 2026-11-29, those
    # isolated-layer times over-predicted whole shipped models 1.5x; docs/costs.md)
    shipped_kernels: bool = False
    # instead of the sweep: this many architectures of ``model``'s space, built as shipped and timed kernel
    # by kernel in place (network_profile); the model then predicts the shipped lowering's kernels
    networks: int = 0

    def items(self) -> list[sweep.LayerShape]:
        """The layers to sweep, in order."""
        if self.layers is not None:  # an explicit sweep replaces the generated one
            return list(self.layers)
        space: list[sweep.LayerShape] = []
        if self.model is not None:
            space = sweep.search_space_layers(load_model(self.model, import_tvm=False).layers)
        random_layers = sweep.random_layers(self.random_kernels, seed=self.seed)
        return list(sweep.interleave(space, random_layers, seed=self.seed))


def profile_target(
    target: str,
    plan: ProfilePlan | None = None,
    *,
    session: Session | None = None,
    db: str | Path | None = None,
    timing: TimingConfig | None = None,
    progress: Progress | None = None,
    model_root: Path | None = None,
) -> ProfileSummary:
    """Profile kernels of ``target`` where ``session`` runs (local by default) until the plan's budget is
    spent, measure its chains and train the latency model.

    ``progress(done, total, label)`` is called before each layer (the CLI shows a progress bar).
    """
    plan = plan or ProfilePlan()
    timing = timing or TimingConfig()
    cost_target = get_target(target)
    cost_target.check_profilable(target)
    session = session or Session.local()
    start = time.monotonic()
    store = ProfileStore(db)
    summary = ProfileSummary(target=cost_target.name, device=session.device_id, db=store.path)
    if plan.networks:
        _profile_networks(plan, cost_target, session, store, summary, progress, model_root)
        store.close()
        summary.seconds = time.monotonic() - start
        return summary
    items = plan.items()
    done_layers = []
    for i, layer in enumerate(items):
        if time.monotonic() > start + plan.budget_minutes * 60.0:
            break
        if progress:
            progress(i, len(items), layer.label())
        if _profile_layer(layer, cost_target, session, timing, store, summary, plan.shipped_kernels):
            done_layers.append(layer)
    if progress:
        progress(len(items), len(items), "whole-model chains")
    measured_chains = _measure_chains(done_layers, plan, cost_target, session, store, summary)
    rows = store.kernels(cost_target.name, session.device_id)
    if plan.train_model and len(rows) >= 4:
        model = _train(rows, cost_target.name, session.device_id, measured_chains)
        model.save(model_root)
        summary.model_version, summary.model_samples = model.meta.version, model.meta.n_samples
    store.close()
    summary.seconds = time.monotonic() - start
    return summary


def _profile_layer(
    layer, cost_target, session: Session, timing, store: ProfileStore, summary, shipped_kernels: bool = False
) -> bool:
    """Time the kernels of one swept layer not in the store yet; False when TVM cannot lower it."""
    try:
        module = sweep.layer_module(layer)
        lowered = lower_to_kernels(module, cost_target.name)
    except Exception as exc:  # a shape TVM cannot lower: skip it, say which
        summary.failed.append(f"{layer.label()}: {type(exc).__name__}")
        return False
    stored = store.get_kernel
    todo = [k for k in lowered.kernels if not stored(cost_target.name, session.device_id, k.signature)]
    summary.reused += len(lowered.kernels) - len(todo)
    shipped = (
        _shipped_times(module, lowered, cost_target, session, timing) if todo and shipped_kernels else {}
    )
    for kernel in todo:
        try:
            timed = shipped.get(kernel.name) or time_kernel(kernel.prim_func, cost_target, session, timing)
        except Exception as exc:
            summary.failed.append(f"{layer.label()} {kernel.name}: {type(exc).__name__}")
            continue
        store.put_kernel(
            KernelRow(
                cost_target.name,
                tvm_version(),
                session.device_id,
                kernel.signature,
                kernel.features,
                timed.median_s,
                timed.spread,
                len(timed.samples_s),
                timed.number,
            )
        )
        summary.measured += 1
        summary.shipped += kernel.name in shipped
    return True


def _profile_networks(plan: ProfilePlan, cost_target, session: Session, store, summary, progress, model_root):
    """``plan.networks`` architectures of ``plan.model``'s space timed kernel by kernel inside their shipped
    builds (stored: each kernel's in-network median, each network's whole time), then the latency model of
    the shipped lowering trained on them."""
    if plan.model is None:
        raise HanascError("profiling networks needs a model whose search space they come from (--model)")
    cost_target.check_networks_in_place(session.remote is not None)
    deadline = time.monotonic() + plan.budget_minutes * 60.0
    profiles = []
    for i, arch in enumerate(sample_architectures(plan.model, plan.networks, plan.seed)):
        if progress:
            progress(i, plan.networks, f"network {arch.label}")
        profile = profile_network(arch.mod, cost_target.name)
        if profile is None:
            summary.failed.append(f"{arch.label}: kernel calls differ from the lowering")
        else:
            for row in network_rows(profile, cost_target.name, session.device_id):
                store.put_kernel(row)
            store.put_model(
                ModelRow(
                    module_hash(arch.mod),
                    f"network {arch.label}",
                    cost_target.name,
                    session.device_id,
                    tvm_version(),
                    profile.whole_s * 1e3,
                    1,
                    "measured",
                    profile.lowered.total_calls,
                )
            )
            profiles.append(profile)
            summary.networks_measured += 1
            summary.measured += len(profile.lowered.kernels)
            summary.shipped += len(profile.lowered.kernels)
        if time.monotonic() > deadline:
            break
    if progress:
        progress(plan.networks, plan.networks, "training")
    if plan.train_model and len(profiles) >= 2:
        model = train_on_networks(profiles, cost_target.name, session.device_id)
        model.save(model_root)
        summary.model_version, summary.model_samples = model.meta.version, model.meta.n_samples


def _shipped_times(module, lowered, cost_target, session: Session, timing) -> dict[str, Timing]:
    """Each kernel of ``lowered`` timed inside the artifact hanasc ships for ``module`` (blocked layouts,
    default schedules, tuning records; :func:`hanasc.cost_models.efficiency_probe.shipped_kernel_samples`),
    by kernel name. Empty where that cannot be done: a remote session, a cross-compiled or GPU target, or a
    build whose calls do not pair one to one with the cost model's kernels; those are timed alone."""
    if not cost_target.times_in_place(session.remote is not None):
        return {}
    try:
        samples = shipped_kernel_samples(module, runs=max(timing.repeat, 5))
    except Exception:  # the shipped build failed: the kernels are timed alone
        return {}
    if len(samples) != len(lowered.call_order):
        return {}
    by_name: dict[str, list[float]] = {}
    for name, times in zip(lowered.call_order, samples, strict=True):
        by_name.setdefault(name, []).extend(times)
    result = {}
    for name, times in by_name.items():
        median = statistics.median(times)
        spread = (max(times) - min(times)) / median if median > 0 else 0.0
        result[name] = Timing(median, spread, tuple(times), 1)
    return result


def _measure_chains(done_layers, plan: ProfilePlan, cost_target, session: Session, store, summary) -> list:
    """Chains of swept layers measured end to end (stored as whole-model rows): (lowered, seconds) each."""
    measured_chains = []
    for n_layers in _chain_lengths(plan.chains):
        chain = _chain(done_layers, n_layers, plan.seed)
        if chain is None:
            break
        mod = chain_module(chain)
        timed = measure_model(mod, cost_target.name, session)
        chain_lowered = lower_to_kernels(mod, cost_target.name)
        measured_chains.append((chain_lowered, timed.median_ms / 1e3))
        store.put_model(
            ModelRow(
                module_hash(mod),
                f"chain{n_layers}",
                cost_target.name,
                session.device_id,
                tvm_version(),
                timed.median_ms,
                timed.runs,
                "measured",
                chain_lowered.total_calls,
            )
        )
        summary.chains_measured += 1
    return measured_chains


def _train(rows, target: str, device: str, measured_chains: list):
    """The XGBoost latency model on the kernel rows, its per-call overhead fitted on the chains."""
    model = train(rows, target, device)
    if measured_chains:
        sums = [model.predict_sum_s(lowered) for lowered, _ in measured_chains]
        calls = [lowered.total_calls for lowered, _ in measured_chains]
        measured = [seconds for _, seconds in measured_chains]
        cal = fit_calibration(sums, calls, measured, fit_scale=False, base=model.meta.version)
        model = model.with_calibration(cal)
    return model


def _chain_lengths(n: int) -> list[int]:
    return [2 + 2 * i for i in range(n)]


def _chain(layers: list[sweep.LayerShape], n: int, seed: int):
    """``n`` fp32 conv layers of the sweep whose shapes can be chained (channels adapted), or None."""
    import random

    convs = [ly for ly in layers if not ly.dense and ly.dtype == "float32" and ly.h <= 56]
    if len(convs) < 2:
        return None
    rng = random.Random(seed + n)
    return [rng.choice(convs) for _ in range(n)]


def chain_module(layers: list[sweep.LayerShape]):
    """A Relax module running the layers one after another (input channels follow the previous output)."""
    import numpy as np
    from tvm import relax

    rng = np.random.default_rng(0)
    first = layers[0]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, first.cin, first.h, first.w), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y, c = x, first.cin
            for layer in layers:
                groups = c if layer.groups > 1 else 1
                cout = c if groups > 1 else layer.cout
                w = (
                    rng.standard_normal((cout, c // groups, layer.kernel, layer.kernel)).astype("float32")
                    * 0.1
                )
                y = bb.emit(
                    relax.op.nn.conv2d(
                        y, relax.const(w), strides=layer.stride, padding=layer.kernel // 2, groups=groups
                    )
                )
                bias = rng.standard_normal((1, cout, 1, 1)).astype("float32")
                y = bb.emit(relax.op.clip(relax.op.add(y, relax.const(bias)), 0.0, 6.0))
                c = cout
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()
