"""Recovery by fine-tuning: distillation reduces a damaged model's error on data it did not train on, the
tuned values reach the materialized module, and an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_simulator import calibration

import hanasc
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import recovered_weights
from hanasc.recovery.finetune import FinetuneSettings, distillation_loss, finetune
from hanasc.recovery.torch_form import TorchForm
from hanasc.search.simulator import Simulator


@pytest.fixture(scope="module")
def damaged(test_models):
    """A conv stack with every layer at 2-bit weights and int8 activations."""
    model = hanasc.load_model(test_models["plain_conv"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, *model.inputs[0].shape[1:])).astype(np.float32)
    ranges = calibration(model, x[:64])
    config = Config({layer.name: LayerChoice(w_bits=2, a_bits=8) for layer in model.layers})
    teacher = Simulator(model, batch=16).run(Config(), x)
    return model, config, ranges, x, teacher


def _error(outputs: np.ndarray, teacher: np.ndarray) -> float:
    return float(np.mean((outputs - teacher) ** 2) / np.var(teacher))


def test_finetuning_reduces_the_error_on_unseen_samples(damaged, tmp_path):
    model, config, ranges, x, teacher = damaged
    train, held = slice(0, 64), slice(64, None)
    start = recovered_weights(model, config, ranges)
    sim = Simulator(model, batch=16)
    before = _error(sim.run(config, x[held], ranges), teacher[held])
    form = TorchForm(model, config, ranges, start)
    # the stack's outputs are features; a step count, not a time, so that a slow machine runs the same
    settings = FinetuneSettings(minutes=10.0, objective="mse", max_steps=200)
    tuned = finetune(form, x[train], teacher[train], None, settings, tmp_path / "ck.pt")
    assert tuned.steps == 200
    assert tuned.loss_end < 0.8 * tuned.loss_start
    feeds = sim.feeds(config, ranges, values=tuned.values)
    after = _error(sim.run(config, x[held], ranges, feeds=feeds), teacher[held])
    assert after < 0.8 * before, (before, after)
    # the shipped module is built from the tuned values: it computes what the simulator scored
    shipped = materialized_outputs_from(model, config, ranges, tuned.values, x[held][:4])
    simulated = sim.run(config, x[held][:4], ranges, feeds=feeds)
    step = (simulated.max() - simulated.min()) / 255  # one int8 step over the output's range
    assert np.abs(shipped - simulated).max() <= step


def materialized_outputs_from(model, config, ranges, values, x):
    from hanasc.core.relax_params import bind_weights
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.targets import host

    executable = host.build(bind_weights(materialize_recovered(model, config, ranges, values)))
    return np.concatenate([host.run(executable, [sample[None]])[0] for sample in x])


def test_checkpoint_resumes_and_a_finished_run_is_reused(damaged, tmp_path):
    model, config, ranges, x, teacher = damaged
    checkpoint = tmp_path / "ck.pt"
    settings = FinetuneSettings(minutes=0.05, checkpoint_every_s=0.0)
    form = TorchForm(model, config, ranges, recovered_weights(model, config, ranges))
    first = finetune(form, x, teacher, None, settings, checkpoint)
    assert checkpoint.is_file()
    again = finetune(TorchForm(model, config, ranges), x, teacher, None, settings, checkpoint)
    assert again.steps == first.steps
    for name, value in first.values.items():
        np.testing.assert_array_equal(again.values[name], value)
    longer = FinetuneSettings(minutes=0.1, checkpoint_every_s=0.0)
    state = torch.load(checkpoint, weights_only=False)
    state["done"] = False  # as if interrupted: the longer budget continues from the saved step
    torch.save(state, checkpoint)
    resumed = finetune(TorchForm(model, config, ranges), x, teacher, None, longer, checkpoint)
    assert resumed.steps > first.steps


def test_a_run_that_does_not_lower_the_loss_returns_its_start(damaged, tmp_path):
    model, config, ranges, x, teacher = damaged
    start = recovered_weights(model, config, ranges)
    form = TorchForm(model, config, ranges, start)
    wild = FinetuneSettings(minutes=0.05, learning_rate=10.0, objective="mse")  # diverges
    tuned = finetune(form, x, teacher, None, wild, tmp_path / "ck.pt")
    assert tuned.steps > 0 and not tuned.improved
    assert tuned.loss_end == tuned.loss_start
    for name, value in start.items():
        if name in tuned.values:
            np.testing.assert_allclose(tuned.values[name], value, rtol=1e-6, atol=1e-7)


def test_loss_uses_labels_for_classifiers_and_mse_otherwise():
    settings = FinetuneSettings(minutes=1)
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    same = distillation_loss(teacher.clone(), teacher, None, settings)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    with_labels = distillation_loss(teacher.clone(), teacher, np.array([1, 0]), settings)
    assert float(with_labels) > 0.5  # the labels disagree with the teacher
    maps = torch.ones(2, 3, 4, 4)
    assert float(distillation_loss(maps * 2, maps + torch.rand(2, 3, 4, 4), None, settings)) > 0
