"""Recovery by fine-tuning: knowledge distillation from the original model into a Config's torch form.

The student is :class:`hanasc.recovery.torch_form.TorchForm` (the simulator's forward pass with
straight-through gradients through weight quantization, pruning masks, kernel crops and the separable
factorization, and through the int8 / fp16 activation fake-quantizers). It starts from the data-light
recovery's values (the least-squares refits and bias corrections) and learns, on the calibration split only:

- class scores (``objective="kl"``, outputs ``(batch, classes)``): KL divergence from the original's
  softened outputs (temperature T, scaled by T²), plus cross-entropy when the data has labels;
- any other output (``objective="mse"``: features, embeddings, maps): mean squared error to the original's
  outputs, over their variance. ``"auto"`` reads a 2-D output as class scores.

A run never returns values worse than its start: when the loss on the training data (its first
:data:`LOSS_SAMPLES` samples: a training set of 60,000 would cost minutes a pass) did not drop,
the starting values come back (``improved`` is False).

Activation scales stay the calibrated ones (``activation_ranges.json`` replays them). Training stops at
its time budget (or after ``max_steps``, the same run on any machine); the state is checkpointed every
``checkpoint_every_s`` and at the end, so an interrupted run resumes where it stopped. The learning rate
decays along a cosine over the budget (the straight-through steps of low-bit weights flip roundings; the
last steps settle them). The result is the tuned values in the original shapes: the materialized module is
built from them (the Config's passes then transform them), and ``hanasc apply`` replays them
from ``tuned_weights.npz``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TUNED_WEIGHTS_FILE = "tuned_weights.npz"
LOSS_SAMPLES = 2048  # training samples the before / after loss is taken on


@dataclass(frozen=True)
class FinetuneSettings:
    """How one candidate is fine-tuned."""

    minutes: float
    batch: int = 16
    learning_rate: float = 1e-4
    temperature: float = 2.0
    label_weight: float = 0.5  # weight of the cross-entropy term when labels exist
    checkpoint_every_s: float = 30.0
    seed: int = 0
    objective: str = "auto"  # "kl" for class scores, "mse" for any other output, "auto" by output rank
    max_steps: int | None = None  # stop after this many steps too (a run that is the same on any machine)


@dataclass
class TunedWeights:
    """The outcome of fine-tuning one Config."""

    values: dict[str, np.ndarray]  # original shapes, by initializer name
    steps: int
    seconds: float
    loss_start: float  # distillation loss on the training data (first LOSS_SAMPLES), before and after
    loss_end: float
    samples: int
    labels_used: bool
    improved: bool = True  # False: training did not lower the loss and the starting values were kept

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "distillation_loss_before": round(self.loss_start, 5),
            "distillation_loss_after": round(self.loss_end, 5),
            "training_samples": self.samples,
            "labels_used": self.labels_used,
            "improved": self.improved,
        }


def distillation_loss(student, teacher, labels, settings: FinetuneSettings):
    """KL (+ cross-entropy) for class scores, variance-normalized MSE for other outputs."""
    import torch
    import torch.nn.functional as F

    class_scores = student.dim() == 2 if settings.objective == "auto" else settings.objective == "kl"
    if not class_scores:
        return F.mse_loss(student, teacher) / teacher.var().clamp_min(1e-12)
    t = settings.temperature
    loss = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    if labels is not None:
        loss = loss + settings.label_weight * F.cross_entropy(student, torch.as_tensor(labels).long())
    return loss


def _whole_loss(form, x: np.ndarray, teacher: np.ndarray, y, settings: FinetuneSettings) -> float:
    import torch

    x, teacher = x[:LOSS_SAMPLES], teacher[:LOSS_SAMPLES]
    y = None if y is None else y[:LOSS_SAMPLES]
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), settings.batch):
            end = min(start + settings.batch, len(x))
            out = form(torch.from_numpy(x[start:end]))
            labels = None if y is None else y[start:end]
            total += float(distillation_loss(out, torch.from_numpy(teacher[start:end]), labels, settings)) * (
                end - start
            )
    return total / len(x)


@dataclass
class _Checkpoint:
    path: Path | None

    def load(self) -> dict | None:
        import torch

        if self.path is None or not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=False)
        except Exception:  # a torn or foreign file: start over
            return None

    def save(self, state: dict) -> None:
        import torch

        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def finetune(
    form,
    x: np.ndarray,
    teacher: np.ndarray,
    y: np.ndarray | None,
    settings: FinetuneSettings,
    checkpoint: Path | None = None,
    progress: Callable[[float, str], None] = lambda seconds, text: None,
) -> TunedWeights:
    """Distil ``teacher`` (the original's outputs on ``x``) into ``form`` (a TorchForm) for at most
    ``settings.minutes``; resumes from ``checkpoint`` when it holds an unfinished run of the same form.
    ``progress(seconds done, status)`` is called after every step."""
    import torch

    store = _Checkpoint(checkpoint)
    optimizer = torch.optim.Adam(form.parameters(), lr=settings.learning_rate)
    state = store.load()
    if state is not None and state.get("names") == form.names and "start_values" in state:
        if state["done"]:
            return TunedWeights(**state["result"])
        with torch.no_grad():
            for p, value in zip(form.params, state["values"], strict=True):
                p.copy_(torch.from_numpy(value))
        optimizer.load_state_dict(state["optimizer"])
        step, spent, loss_start = state["step"], state["seconds"], state["loss_start"]
        start_values = state["start_values"]
        progress(spent, f"resumed at step {step}")
    else:
        step, spent = 0, 0.0
        loss_start = _whole_loss(form, x, teacher, y, settings)
        start_values = [p.detach().numpy().copy() for p in form.params]
    budget_s = settings.minutes * 60.0
    began = last_save = time.perf_counter()

    def snapshot(done: bool, result: dict | None = None) -> dict:
        return {
            "names": form.names,
            "values": [p.detach().numpy().copy() for p in form.params],
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seconds": spent + time.perf_counter() - began,
            "loss_start": loss_start,
            "start_values": start_values,
            "done": done,
            "result": result,
        }

    limit = settings.max_steps or math.inf
    while (elapsed := spent + time.perf_counter() - began) < budget_s and step < limit:
        done = max(elapsed / budget_s, step / limit)  # the budget spent: time or steps, whichever is ahead
        for group in optimizer.param_groups:  # cosine decay over the budget: the last steps settle
            group["lr"] = settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * done))
        rng = np.random.default_rng(settings.seed + step)
        index = rng.choice(len(x), size=min(settings.batch, len(x)), replace=False)
        out = form(torch.from_numpy(x[index]))
        loss = distillation_loss(
            out, torch.from_numpy(teacher[index]), None if y is None else y[index], settings
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        now = time.perf_counter()
        progress(spent + now - began, f"step {step}, batch loss {loss.item():.4f}")
        if now - last_save >= settings.checkpoint_every_s:
            store.save(snapshot(done=False))
            last_save = now
    seconds = spent + time.perf_counter() - began
    loss_end = _whole_loss(form, x, teacher, y, settings)
    improved = loss_end < loss_start
    if not improved:  # never hand back values worse than the start
        with torch.no_grad():
            for p, value in zip(form.params, start_values, strict=True):
                p.copy_(torch.from_numpy(value))
        loss_end = loss_start
    result = TunedWeights(
        values=form.values(),
        steps=step,
        seconds=seconds,
        loss_start=loss_start,
        loss_end=loss_end,
        samples=len(x),
        labels_used=y is not None,
        improved=improved,
    )
    store.save(snapshot(done=True, result=result.__dict__))
    return result


def save_tuned(path: Path, values: dict[str, np.ndarray]) -> None:
    """The tuned values as an .npz (keys: initializer names)."""
    with open(path, "wb") as f:
        np.savez(f, **values)


def load_tuned(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
