"""What `hanasc targets` shows: each target's TVM target, allowed choices and cost-model status."""

from __future__ import annotations

from dataclasses import asdict

from hanasc.targets.registry import all_targets


def cost_model_status(target: str) -> str:
    """Calibrated with N measured samples, or prior only."""
    from hanasc.cost_models.latency_model import load_latest

    try:
        model = load_latest(target)
    except Exception as exc:  # a broken cache must not hide the target list
        return f"prior only (latency model unreadable: {exc})"
    if model is None:
        return "prior only (roofline from the target's spec; run `hanasc profile` or `hanasc calibrate`)"
    meta = model.meta
    calibrated = ", calibrated with whole-model measurements" if meta.calibration else ""
    return (
        f"predicted: XGBoost latency model {meta.version}, trained on {meta.n_samples} measured "
        f"kernel samples on {meta.device}{calibrated}"
    )


def targets_json() -> list[dict]:
    rows = []
    for info in all_targets():
        choices = asdict(info.choices)
        rows.append(
            {
                "name": info.name,
                "aliases": list(info.aliases),
                "description": info.description,
                "tvm_target": info.tvm_target_json,
                "choices": {k: list(v) for k, v in choices.items()},
                "cost_model": cost_model_status(info.name),
                "kernels": info.kernels(),
                "checked_here": info.checked_here,
                "checked_on_device": info.checked_on_device,
            }
        )
    return rows
