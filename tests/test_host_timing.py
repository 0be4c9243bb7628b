"""Host timing side by side: round-robin rounds, per-round ratios that a drifting machine cannot move, and
the figures the compile job reports from them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hanasc.cost_models.timing import HostReference, median_ratio, round_robin, time_side_by_side


class _DriftingMachine:
    """Fake timers on a machine that becomes 1.7x slower after ``switch`` calls."""

    def __init__(self, switch: int) -> None:
        self.calls = itertools.count()
        self.switch = switch

    def timer(self, true_ms: float):
        return lambda: true_ms * (1.7 if next(self.calls) >= self.switch else 1.0)


def test_round_robin_alternates_and_the_ratio_ignores_a_speed_change():
    machine = _DriftingMachine(switch=13)  # the speed changes inside round 7 of 15
    candidate, original = round_robin([machine.timer(6.0), machine.timer(10.0)], rounds=15)
    assert len(candidate) == len(original) == 15
    assert median_ratio(candidate, original) == pytest.approx(0.6)
    # timed one block after the other, the same two models look 1.7x further apart
    machine = _DriftingMachine(switch=15)
    (blocked_candidate,) = round_robin([machine.timer(6.0)], rounds=15)
    (blocked_original,) = round_robin([machine.timer(10.0)], rounds=15)
    assert np.median(blocked_candidate) / np.median(blocked_original) == pytest.approx(0.6 / 1.7)


@pytest.fixture(scope="module")
def executables(test_models):
    import hanasc
    from hanasc.targets import host

    model = hanasc.load_model(test_models["dense_head"])
    return model, host.build_artifact(model.mod), [model.example_inputs()["input"]]


def test_side_by_side_figures_say_how_they_were_timed(executables):
    _, executable, inputs = executables
    first, second = time_side_by_side([executable, executable], ["the original", "uniform int8"], inputs, 5)
    for figure, other in ((first, "uniform int8"), (second, "the original")):
        assert figure["source"] == "measured" and figure["runs"] == 5 and figure["statistic"] == "median"
        assert figure["interleaved_with"] == other and figure["where"].startswith("host")
        low, high = figure["spread_ms"]
        assert 0 < low <= figure["value"] <= high


def test_candidate_is_reported_relative_to_the_original_timed_beside_it(executables):
    model, executable, inputs = executables
    reference = HostReference(model.mod, median_ms=4.0)  # built on first use, as after --resume
    figure = reference.measure_beside(executable, inputs, rounds=9)
    assert reference.executable is not None
    assert figure["source"] == "measured" and figure["runs"] == 9
    assert figure["value"] == pytest.approx(figure["ratio_to_original"] * 4.0, abs=1e-3)
    assert 0.3 < figure["ratio_to_original"] < 3.0  # the same model on both sides
    assert figure["original_reference_ms"] == 4.0 and figure["raw_median_ms"] > 0


def test_report_line_of_a_latency_timed_beside_the_original():
    from hanasc.compile.report_markdown import fmt_figure as _fmt

    timed = {"value": 13.6, "source": "measured", "runs": 15, "ratio_to_original": 0.65}
    timed |= {"raw_median_ms": 10.4, "original_in_loop_ms": 16.0}
    assert _fmt(timed) == (
        "13.6 (measured, median of 15: 0.65x the original timed alternately with it, raw 10.4 vs 16.0 ms)"
    )
    assert _fmt({"value": 2.0, "source": "predicted"}) == "2.0 (predicted)"


def test_returning_the_original_reuses_the_reference_artifact():
    """The original's host artifact built for the reference timing is the one shipped when the original is
    returned (no second build), unless tuning has since changed what a build gives."""
    from types import SimpleNamespace

    from hanasc.compile.verify import VerifiedModel, _materialize_original
    from hanasc.search.nsga2 import Budgets
    from hanasc.search.selection import Verified
    from hanasc.targets.registry import get_target

    built = object()
    ctx = SimpleNamespace(
        model=SimpleNamespace(mod="module"),
        reference=HostReference("module", 5.0, executable=built),
        options=SimpleNamespace(tune_minutes=0.0, budgets=Budgets()),
        session=None,
        info=get_target("host"),
        stage=None,
    )
    original = VerifiedModel(None, {"latency": {"value": 5.0}}, Verified("original", 5.0, 1.0, 1.0))
    assert _materialize_original(ctx, original).figures["executable"] is built
