"""Accuracy metrics: top-1 with labels; top-1 agreement and KL divergence against the fp32 model for
classifiers; fidelity (R² against the fp32 model) for any output (detection maps, segmentation, sequences)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hanasc.core.errors import HanascError


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def top1(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    return float((outputs.argmax(axis=1) == labels).mean())


def agreement(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float:
    """Share of samples whose top-1 class equals the fp32 model's."""
    return float((outputs.argmax(axis=1) == reference.argmax(axis=1)).mean())


def kl_divergence(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean KL(softmax(reference) || softmax(outputs)) in nats."""
    p_log, q_log = _log_softmax(reference), _log_softmax(outputs)
    return float((np.exp(p_log) * (p_log - q_log)).sum(axis=1).mean())


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(z))


def label_probability(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Mean probability given to the true label (a smooth companion of top-1)."""
    return float(_softmax(outputs)[np.arange(len(labels)), labels].mean())


def reference_probability(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float:
    """Mean probability given to the fp32 model's top-1 class (a smooth companion of agreement)."""
    return float(_softmax(outputs)[np.arange(len(reference)), reference.argmax(axis=1)].mean())


def fidelity(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float:
    """R² of the outputs against the fp32 model's: 1 - SSE / total variance of the reference (1 = identical).

    Shape-agnostic, so it scores dense maps (N, C, H, W), sequences (N, T, C) and classifiers alike.
    """
    outputs = np.asarray(outputs, np.float64)
    reference = np.asarray(reference, np.float64)
    spread = float(((reference - reference.mean()) ** 2).sum())
    error = float(((outputs - reference) ** 2).sum())
    if spread == 0.0:
        return 1.0 if error == 0.0 else 0.0
    return 1.0 - error / spread


def neg_kl(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float:
    return -kl_divergence(outputs, reference)


@dataclass(frozen=True)
class Metric:
    """A higher-is-better score of a model's outputs."""

    name: str
    description: str
    needs_labels: bool
    fn: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], float]
    smooth: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], float]
    smooth_description: str
    point: float = 0.01  # one point of the metric (--max-loss counts these): 1 % for fractions
    needs_classes: bool = True  # compares class scores: the output must be (batch, classes)

    def __call__(self, outputs, labels=None, reference=None) -> float:
        return self.fn(outputs, labels, reference)


METRICS = {
    "top1": Metric(
        "top1",
        "top-1 accuracy against the labels",
        True,
        top1,
        label_probability,
        "mean probability of the true label",
    ),
    "agreement": Metric(
        "agreement",
        "top-1 agreement with the original fp32 model",
        False,
        agreement,
        reference_probability,
        "mean probability of the fp32 model's top-1 class",
    ),
    "kl": Metric(
        "kl",
        "negative mean KL divergence from the original fp32 model (nats)",
        False,
        neg_kl,
        neg_kl,
        "negative mean KL divergence",
        point=0.01,  # 0.01 nats
    ),
    "fidelity": Metric(
        "fidelity",
        "R² of the outputs against the original fp32 model's (1 = identical; any output shape)",
        False,
        fidelity,
        fidelity,
        "R² against the fp32 model's outputs",
        point=0.01,
        needs_classes=False,
    ),
}


def choose_metric(name: str | None, has_labels: bool, classifier: bool = True) -> Metric:
    """The metric named by ``--metric``; by default top1 with labels, agreement without, and fidelity when
    the model's output is not ``(batch, classes)`` (a detector, a segmenter, a sequence model)."""
    if name is None:
        if not classifier:
            return METRICS["fidelity"]
        return METRICS["top1" if has_labels else "agreement"]
    if name not in METRICS:
        raise HanascError(f"--metric {name}: unknown; choose one of {', '.join(METRICS)}")
    if METRICS[name].needs_labels and not has_labels:
        raise HanascError(f"--metric {name} needs labels (y in the .npz, or class folders)")
    return METRICS[name]
