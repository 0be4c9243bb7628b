"""Accuracy metrics: the defaults per output shape and fidelity (R² against the original) for any output."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.core.errors import HanascError
from hanasc.core.metrics import choose_metric, fidelity


def test_fidelity_is_one_for_identical_outputs_and_drops_with_error():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 2, 8, 8))
    assert fidelity(reference, None, reference) == 1.0
    small = fidelity(reference + 0.1 * rng.standard_normal(reference.shape), None, reference)
    large = fidelity(reference + 1.0 * rng.standard_normal(reference.shape), None, reference)
    assert 0.95 < small < 1.0 and large < 0.1
    assert fidelity(np.zeros(3), None, np.zeros(3)) == 1.0


def test_default_metric_follows_the_output_shape():
    assert choose_metric(None, has_labels=True).name == "top1"
    assert choose_metric(None, has_labels=False).name == "agreement"
    assert choose_metric(None, has_labels=False, classifier=False).name == "fidelity"
    assert choose_metric(None, has_labels=True, classifier=False).name == "fidelity"
    assert choose_metric("fidelity", has_labels=False).name == "fidelity"


def test_class_metric_on_a_sequence_output_names_fidelity(tmp_path):
    from builders import folded_sequence_model

    model = hanasc.load_model(folded_sequence_model(tmp_path / "seq.onnx"))
    assert not model.is_classifier()
    with pytest.raises(HanascError, match=r"'output' has shape .*--metric fidelity"):
        model.check_classifier_output("agreement")
