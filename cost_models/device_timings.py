"""``hanasc calibrate``: whole-model timings a user took on a device (a CSV of ONNX path, ms, threads,
runtime note) fitted into a calibration of the target's prior (or of its XGBoost model's overhead), saved
per device; export and import so a team shares one per device; the table the CLI prints."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.relax_params import bind_weights
from hanasc.cost_models.device_prior import DevicePrior
from hanasc.cost_models.estimate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_DEVICE,
    CalibrationInputError,
    CostContext,
    _latency_model,
    costed_lowering,
    kernel_times,
    load_device_calibration,
    save_device_calibration,
)
from hanasc.cost_models.kernels import lower_for_costs
from hanasc.cost_models.latency_calibration import (
    Calibration,
    DeviceCalibration,
    fit_calibration,
    fit_device,
    save_calibration,
)
from hanasc.cost_models.spec import load_spec
from hanasc.cost_models.store import ModelRow, tvm_version
from hanasc.cost_models.target_info import get_target
from hanasc.cost_models.timing import module_hash
from hanasc.frontend.loading import load_model


@dataclass(frozen=True)
class Measurement:
    """One whole-model timing a user took on the device: ONNX path, milliseconds, threads, runtime note."""

    model: Path
    ms: float
    threads: int | None = None
    runtime: str = ""


def calibrate(
    target: str,
    rows: list[Measurement] | list[tuple[str | Path, float]],
    ctx: CostContext | None = None,
    base: str = "auto",
    input_shapes: dict | None = None,
) -> DeviceCalibration | Calibration:
    """Fit a calibration from whole-model measurements and save it for ``ctx.device``.

    ``base``: "prior" bends the device prior (per-kind factors + per-call overhead, XGBoost residual with
    >= 30 timings; chosen by cross-validation); "model" fits the runtime overhead of the target's XGBoost
    model; "auto" picks the model if one was trained.
    """
    ctx = ctx or CostContext()
    rows = [r if isinstance(r, Measurement) else Measurement(Path(r[0]), float(r[1])) for r in rows]
    if not rows:
        raise CalibrationInputError("calibration needs at least one (model, ms) measurement")
    cost_target = get_target(target)
    spec = load_spec(cost_target.name, ctx.cache() / "host_spec.json")
    model = _latency_model(cost_target, ctx)
    use_model = model is not None and base in ("auto", "model")
    if base == "model" and model is None:
        raise CalibrationInputError(f"no latency model trained for '{cost_target.name}' (run hanasc profile)")
    sums, calls, measured, terms = [], [], [], []
    prior = DevicePrior.for_spec(spec, None, ctx.cache())
    lowering = costed_lowering(cost_target, model if use_model else None)
    with ctx.store() as store:
        for row in rows:
            loaded = load_model(row.model, input_shapes).mod
            lowered = lower_for_costs(loaded, cost_target.name, lowering)
            if use_model:
                times = kernel_times(lowered, spec, model, store)
                sums.append(sum(t * k.calls for t, k in zip(times.seconds, lowered.kernels, strict=True)))
            else:
                terms.append(DevicePrior(spec, prior.model, row.threads).terms(lowered))
            calls.append(lowered.total_calls)
            measured.append(row.ms / 1e3)
            store.put_model(
                ModelRow(
                    module_hash(bind_weights(loaded)),
                    row.model.name,
                    cost_target.name,
                    ctx.device or "user",
                    tvm_version(),
                    row.ms,
                    0,
                    f"imported{': ' + row.runtime if row.runtime else ''}",
                    lowered.total_calls,
                )
            )
    if use_model:
        cal = fit_calibration(sums, calls, measured, fit_scale=True, base=model.meta.version)
        save_calibration(cal, ctx.calibration_path(cost_target.name, "model"))
        return cal
    device_cal = fit_device(
        terms,
        measured,
        device=ctx.device or DEFAULT_DEVICE,
        target=cost_target.name,
        prior=prior.name,
    )
    save_device_calibration(device_cal, ctx.device_calibration_path(cost_target.name))
    return device_cal


def read_measurements_csv(path: str | Path) -> list[Measurement]:
    """Rows ``model,ms[,threads][,runtime]`` (header required; model paths relative to the CSV's folder)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        raise CalibrationInputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CalibrationInputError(f"{path}: not a text CSV file") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"model", "ms"} <= set(reader.fieldnames):
        raise CalibrationInputError(f"{path}: expected a header with columns 'model' and 'ms'")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            ms = float(row["ms"])
        except (TypeError, ValueError):
            raise CalibrationInputError(f"{path}:{line}: 'ms' is not a number: {row['ms']!r}") from None
        if not ms > 0 or ms == float("inf"):
            raise CalibrationInputError(f"{path}:{line}: 'ms' must be a positive number")
        threads = None
        if (row.get("threads") or "").strip():
            try:
                threads = int(row["threads"])
            except ValueError:
                threads = 0
            if threads <= 0:
                raise CalibrationInputError(f"{path}:{line}: 'threads' must be a positive integer")
        if not (row.get("model") or "").strip():
            raise CalibrationInputError(f"{path}:{line}: empty 'model'")
        model = (path.parent / row["model"].strip()).resolve()
        if not model.exists():
            raise CalibrationInputError(f"{path}:{line}: model '{row['model']}' not found")
        rows.append(Measurement(model, ms, threads, (row.get("runtime") or "").strip()))
    if not rows:
        raise CalibrationInputError(f"{path}: no measurements (one row per timed model)")
    return rows


def calibrate_from_csv(target: str, csv_path: str | Path, ctx: CostContext | None = None, base: str = "auto"):
    """``hanasc calibrate --target T measurements.csv``: returns the fitted calibration."""
    return calibrate(target, read_measurements_csv(csv_path), ctx, base)


def export_calibration(target: str, ctx: CostContext, out: Path) -> Path:
    """Copy the device's calibration of ``target`` to ``out`` (to share it)."""
    cal = load_device_calibration(ctx, target)
    if cal is None:
        raise CalibrationInputError(
            f"--export: no calibration of '{target}' for device '{ctx.device or DEFAULT_DEVICE}'"
        )
    save_device_calibration(cal, Path(out))
    return Path(out)


def import_calibration(path: Path, ctx: CostContext, target: str | None = None) -> DeviceCalibration:
    """Install a shared calibration file for its device (``ctx.device`` overrides the device it names)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
        cal = DeviceCalibration.from_json(data)
    except FileNotFoundError:
        raise CalibrationInputError(f"--import {path}: no such file") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CalibrationInputError(f"--import {path}: not a hanasc device calibration ({exc})") from None
    if target is not None and get_target(target).name != cal.target:
        raise CalibrationInputError(f"--import {path}: calibrates '{cal.target}', not '{target}'")
    if ctx.device:
        cal.device = ctx.device
    save_device_calibration(cal, ctx.device_calibration_path(cal.target, cal.device))
    return cal


def calibration_table(cal, target: str) -> str:
    """A plain-text summary of a calibration (device calibration or XGBoost-model overhead)."""
    if isinstance(cal, Calibration):
        rows = [
            ("target", target),
            ("corrects", cal.base),
            ("models", str(cal.n_models)),
            ("scale", f"{cal.scale:.4g}"),
            ("overhead per kernel call", f"{cal.per_call_s * 1e6:.2f} us"),
            ("fixed overhead", f"{cal.fixed_s * 1e3:.4f} ms"),
            ("RMSPE on these models", f"{cal.fit_rmspe:.1f} %"),
        ]
    else:
        rows = [
            ("target", target),
            ("device", cal.device),
            ("corrects", cal.prior),
            ("models", str(cal.n_models)),
            (
                "method (cross-validated)",
                f"{cal.method}" + (f", ridge {cal.ridge:g}" if cal.method != "one-scale" else ""),
            ),
            ("factors per kernel class", ", ".join(f"{k} {v:.3g}" for k, v in cal.factors.items())),
            ("other classes", f"{cal.scale:.3g} (one scale)"),
            ("overhead per kernel call", f"{cal.per_call_s * 1e6:.2f} us"),
            ("held-out RMSPE", f"{cal.cv.get('rmspe', float('nan')):.1f} % ({cal.cv.get('folds', '-')})"),
            ("held-out within ±10 %", f"{cal.cv.get('within_10', float('nan')):.0f} %"),
        ]
        if cal.residuals_log:
            lo, hi = cal.interval(1.0, DEFAULT_CONFIDENCE)
            rows.append(
                ("90 % interval", f"{(lo - 1) * 100:+.1f} % .. {(hi - 1) * 100:+.1f} % of the estimate")
            )
        rows += [("note", n) for n in cal.notes]
    return "\n".join(f"{k:<26} {v}" for k, v in rows)
