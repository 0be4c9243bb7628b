"""Mixed precision that finds the answer: sensitivities measured one change at a time, the ladder from the
original to uniform W8A8 in sensitivity order, verification that walks on past a failing candidate."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np

from hanasc.compile import verify
from hanasc.core.budgets import Budgets
from hanasc.passes.kinds import Slot
from hanasc.search import sensitivity
from hanasc.search.ladder import ladder_genomes, monotone, precision_ladder
from hanasc.search.nsga2 import Candidate
from hanasc.search.predictor import AccuracyPredictor, encode
from hanasc.search.selection import AccuracyFloor, Verified
from hanasc.search.space import SearchSpace

PRECISIONS = ((32, 32), (8, 8), (4, 8))


def _space(layers: int = 6) -> SearchSpace:
    return SearchSpace([Slot(f"p{i}", "precision", (f"conv{i}",), PRECISIONS) for i in range(layers)])


def _sensitivities(space: SearchSpace, harm: list[float]) -> list[sensitivity.Sensitivity]:
    """A simulated model whose outputs move by ``harm[i]`` when layer i is quantized (8 or 4 bits)."""
    reference = np.ones((4, 10))

    def run_genome(genome):
        return reference + sum(harm[i] * g for i, g in enumerate(genome))

    def score(outputs):
        return 1.0 - float(np.abs(outputs - reference).mean())

    changes = sensitivity.single_changes(space, limit=100)
    return sensitivity.measure(space, run_genome, score, reference, changes)


def test_every_layer_w8a8_is_measured_first_and_ordered_by_harm():
    space = _space(4)
    assert sensitivity.single_changes(space, 4) == [(0, 1), (1, 1), (2, 1), (3, 1)]  # W8A8 of each first
    found = _sensitivities(space, [0.3, 0.0, 0.1, 0.02])
    assert len(found) == 8  # 4 layers x 2 changes
    assert sensitivity.int8_order(space, found) == [1, 3, 2, 0]
    w8 = {s.slot: s for s in found if s.choice == (8, 8)}
    assert w8[0].metric_drop > w8[2].metric_drop > w8[3].metric_drop > w8[1].metric_drop == 0.0
    assert w8[0].output_error > w8[2].output_error
    table = sensitivity.table(space, found)
    assert table.shape == (4, 3, 2) and table[0, 0].tolist() == [0.0, 0.0] and table[0, 1, 0] > 0
    assert sensitivity.from_json([s.to_json(digits=None) for s in found]) == found


def test_the_ladder_falls_strictly_in_estimated_latency():
    """Step k quantizes the k least sensitive layers; a step the cost model does not estimate faster (an
    int8 layer between float layers paying its conversions) is folded into the next."""
    space = _space(6)
    order = [5, 1, 3, 0, 2, 4]
    steps = ladder_genomes(space, order)
    assert len(steps) == 7 and not steps[0].any() and (steps[-1] == 1).all()
    assert all((b >= a).all() for a, b in itertools.pairwise(steps))  # one more layer each step

    def latency(genomes):  # step 1 and 3 look slower than the step before them
        per_step = {0: 10.0, 1: 10.4, 2: 9.0, 3: 9.2, 4: 7.0, 5: 6.0, 6: 5.0}
        return np.array([per_step[int((g == 1).sum())] for g in genomes])

    kept = monotone(steps, latency(steps))
    assert kept == [0, 2, 4, 5, 6]
    points = precision_ladder(space, order, latency, points=16)
    ms = [m for _, m in points]
    assert ms == sorted(ms, reverse=True) and len(set(ms)) == len(ms)
    assert (points[-1][0] == 1).all()  # ends at uniform W8A8
    thinned = precision_ladder(space, order, latency, points=3)
    assert len(thinned) == 3 and thinned[0][1] == 10.0 and thinned[-1][1] == 5.0


def test_predictor_features_carry_the_summed_sensitivities():
    space = _space(3)
    found = _sensitivities(space, [0.2, 0.0, 0.1])
    table = sensitivity.table(space, found)
    genomes = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1]])
    features = encode(space, genomes, table)
    assert features.shape == (3, 9 + 2)
    assert features[0, -2] == 0.0 and features[1, -2] > 0 and np.isclose(features[1, -2], features[2, -2])
    scores = np.array([1 - features[i, -2] for i in range(3)] * 4)
    predictor = AccuracyPredictor(space, sensitivity=table)
    report = predictor.fit(np.tile(genomes, (4, 1)), scores)
    assert report.with_sensitivity and "summed single-change" in report.to_json()["model"]


def _verify_context(measured: dict[tuple, tuple[float, float]], limit: int = 6):
    """A run context whose builds 'measure' (latency, score) from ``measured``, by genome."""
    observed = []

    class Costs:
        def __call__(self, genomes):
            return (np.array([5.0]), np.array([1.0]), np.array([0.0]))

        def observe(self, genome, ms):
            observed.append((tuple(genome), ms))

    ctx = SimpleNamespace(
        options=SimpleNamespace(budgets=Budgets(latency_ms=8.0), max_attempts=limit), costs=Costs()
    )
    return ctx, observed


def _fake_verify(measured: dict[tuple, tuple[float, float]], budget_ms: float | None):
    """A stand-in for building and measuring: each genome's (latency, score) from ``measured``."""

    def fake_verify(ctx, config, candidate, estimate_ms, builds):
        ms, score = measured[tuple(candidate.genome)]
        return {
            "latency": {"value": ms, "source": "measured"},
            "score": score,
            "attempt": {"genome": candidate.genome, "measured_ms": ms},
            "meets_budget": budget_ms is None or ms <= budget_ms,
        }

    return fake_verify


def test_verification_walks_past_a_candidate_that_fails_the_floor(monkeypatch):
    """The first candidate's simulation kept the floor, its artifact does not: the walk goes on to the next
    and stops at the first that meets the budget and the floor."""
    measured = {(1, 0): (6.0, 0.80), (0, 1): (9.5, 0.97), (1, 1): (7.0, 0.96), (0, 0): (7.5, 0.99)}
    monkeypatch.setattr(verify, "_verify", _fake_verify(measured, budget_ms=8.0))
    ranked = [Candidate(list(g), 0.9, 5.0, 1.0, 0.0) for g in [(1, 0), (0, 1), (1, 1), (0, 0)]]
    held_out = {(1, 0): 0.99, (0, 1): 0.98, (1, 1): 0.97, (0, 0): 0.96}
    floor = AccuracyFloor(1.0, 5.0)  # >= 0.95
    ctx, observed = _verify_context(measured)
    _, verified_models = verify._verify_ranked(ctx, _space(2), ranked, held_out, floor)
    assert [v.candidate.genome for v in verified_models] == [[1, 0], [0, 1], [1, 1]]
    assert [v.summary.label for v in verified_models] == ["candidate 1", "candidate 2", "candidate 3"]
    last = verified_models[-1].summary
    assert last.meets(ctx.options.budgets) and floor.kept(last.accuracy)
    assert observed == [((0, 1), 9.5)]  # the budget miss teaches the estimate
    ctx, _ = _verify_context(measured, limit=2)
    _, limited = verify._verify_ranked(ctx, _space(2), ranked, held_out, floor)
    assert len(limited) == 2  # --verify-limit bounds the builds


def test_verification_walks_past_a_candidate_the_original_dominates(monkeypatch):
    """Without a latency budget a slower candidate as accurate as the original meets everything, yet the
    selection would return the original: the walk goes on to one that can be returned."""
    measured = {(1, 0): (9.0, 1.0), (0, 1): (4.0, 1.0)}
    monkeypatch.setattr(verify, "_verify", _fake_verify(measured, budget_ms=None))
    ranked = [Candidate(list(g), 0.9, 5.0, 1.0, 0.0) for g in [(1, 0), (0, 1)]]
    ctx, _ = _verify_context(measured)
    ctx.options.budgets = Budgets()
    original = Verified("original", 5.0, 1.0, 1.0)
    floor = AccuracyFloor(1.0, 1.0)
    _, walked = verify._verify_ranked(ctx, _space(2), ranked, {(1, 0): 1.0, (0, 1): 1.0}, floor, original)
    assert [v.candidate.genome for v in walked] == [[1, 0], [0, 1]]
