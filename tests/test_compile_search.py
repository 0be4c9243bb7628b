"""Compile search helpers: costs scaled to measurements (float and int8 apart), seeds, collapse warning."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.compile.pipeline import _space_options
from hanasc.search.costs import SearchCosts
from hanasc.search.seeds import population_seeds, uniform_genome
from hanasc.search.space import build_space
from hanasc.targets.registry import get_target


@pytest.fixture(scope="module")
def costs(test_models, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("HANASC_CACHE", str(tmp_path_factory.mktemp("cache")))
    model = hanasc.load_model(test_models["inverted_residual"])
    space = build_space(model, _space_options(get_target("host"), "joint"))
    return SearchCosts(model, space, "host")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_int8_kernels_are_scaled_on_their_own(costs):
    space = costs.space
    identity, int8 = space.identity(), uniform_genome(space, (8, 8))
    assert int8 is not None and (int8 != identity).any()
    est_float, est_int8 = costs(np.stack([identity, int8]))[0]
    costs.observe(identity, 2.0 * est_float)
    assert costs.scales == pytest.approx((2.0, 2.0))  # one measurement: one scale for both
    # int8 kernels really much faster than the kernel model thinks; the int8 model's float kernels (its
    # input quantize, pooling, the shipped lowering's non-layer kernels) as slow as the float model's
    q = costs.config_costs(space.decode(int8)).int8_s * 1e3
    assert 0 < q < est_int8
    measured_int8 = 2.0 * (est_int8 - q) + 0.5 * q
    costs.observe(int8, measured_int8)
    a, b = costs.scales
    assert a == pytest.approx(2.0, rel=0.05) and b == pytest.approx(0.5, rel=0.05)
    lat = costs(np.stack([identity, int8]))[0]
    assert lat == pytest.approx([2.0 * est_float, measured_int8], rel=0.05)
    assert costs.source()["scale_float_int8"] == [round(a, 4), round(b, 4)]


def test_population_seeds_start_from_uniform_precisions(costs):
    space = costs.space
    seeds = population_seeds(space, np.random.default_rng(0), 40)
    precision = [i for i, s in enumerate(space.slots) if s.kind == "precision"]
    int8_gene = space.slots[precision[0]].choices.index((8, 8))
    arch = [i for i, s in enumerate(space.slots) if s.kind != "precision"]
    mixed = [g for g in seeds if (g[precision] == int8_gene).mean() > 0.5 and g[arch].any()]
    assert mixed, "no seed combines mostly-int8 precisions with architecture changes"
    assert uniform_genome(space, (3, 3)) is None


def test_descent_seeds_start_inside_an_aggressive_budget(costs):
    """A budget that no uniform precision meets gets seeds that meet it, found by the cheapest changes."""
    from hanasc.compile.pipeline import _fastest_genome
    from hanasc.search.nsga2 import Budgets
    from hanasc.search.seeds import descent_seeds, uniform_genomes

    space = costs.space

    def objectives(genomes):
        lat, mem, energy = costs(genomes)
        return -(genomes != 0).sum(axis=1).astype(float), lat, mem, energy  # fewer changes: "more accurate"

    uniform_ms = costs(np.stack(uniform_genomes(space)))[0]
    fastest_ms = costs(_fastest_genome(space)[None])[0][0]
    assert fastest_ms < uniform_ms.min()
    budgets = Budgets(latency_ms=float(fastest_ms + 0.3 * (uniform_ms.min() - fastest_ms)))
    seeds = descent_seeds(space, objectives, budgets, np.random.default_rng(0), 6)
    assert len(seeds) >= 2, "the seeds do not differ"
    latency = costs(np.stack(seeds))[0]
    assert (latency <= budgets.latency_ms).all()
    assert descent_seeds(space, objectives, Budgets(), np.random.default_rng(0), 6) == []


def test_accuracy_collapse_is_warned():
    from hanasc.compile.report import accuracy_warnings
    from hanasc.core.metrics import choose_metric

    metric = choose_metric("agreement", False)
    assert accuracy_warnings(1.0, 0.9, metric) == []
    (warning,) = accuracy_warnings(1.0, 0.2, metric)
    assert "agreement 0.200" in warning and "1.000" in warning


def test_original_at_chance_is_warned():
    """An original that scores chance against the labels means mismatched preprocessing or labels."""
    from hanasc.compile.report import chance_warnings
    from hanasc.core.metrics import choose_metric

    top1, reference = choose_metric("top1", True), np.zeros((8, 10))
    (warning,) = chance_warnings(0.0, reference, top1, "images/")
    assert "images/" in warning and "--mean" in warning and "0.100" in warning
    assert chance_warnings(0.8, reference, top1, "images/") == []
    assert chance_warnings(0.0, reference, choose_metric("agreement", False), "images/") == []


def test_predictor_samples_include_int8_with_one_float_layer(costs):
    from hanasc.search.seeds import seed_genomes

    space = costs.space
    int8 = uniform_genome(space, (8, 8))
    samples = seed_genomes(space, np.random.default_rng(0), 40)
    reverts = [g for g in samples if (g != int8).sum() == 1 and g[np.flatnonzero(g != int8)[0]] == 0]
    assert reverts, "no sample is uniform int8 with one layer kept float"


def test_a_failing_build_of_the_original_is_one_line(tmp_path):
    """TVM's multi-line errors become one line naming the model, the target and the check that failed."""
    from types import SimpleNamespace

    from hanasc.compile.references import fails_as_one_line
    from hanasc.core.errors import HanascError

    model = SimpleNamespace(path=tmp_path / "m.onnx")
    message = "Traceback (most recent call last):\n  0: foo\n  File x.cc\nCheck failed: ndim == 4 (5 vs. 4)\n"
    with pytest.raises(HanascError) as error, fails_as_one_line(model, "cortex-a78"):
        raise RuntimeError(message)
    assert (
        str(error.value)
        == f"{tmp_path / 'm.onnx'}: cannot be compiled for cortex-a78: Check failed: ndim == 4 (5 vs. 4)"
    )


def test_shipped_layer_times_drive_the_estimate(test_models, tmp_path, monkeypatch):
    """Per-layer times measured in the artifact replace the profiles; changed shapes scale by their ratio."""
    from hanasc.cost_models.timing import time_layers
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.targets import host

    monkeypatch.setenv("HANASC_CACHE", str(tmp_path))
    model = hanasc.load_model(test_models["inverted_residual"])
    space = build_space(model, _space_options(get_target("host"), "joint"))
    costs = SearchCosts(model, space, "host")
    shipped = time_layers(
        host.build_artifact(model.mod),
        [model.example_inputs()["input"]],
        [x.name for x in model.layers],
        runs=3,
    )
    assert shipped is not None and set(shipped.layer_ms) == {x.name for x in model.layers}
    costs.use_shipped_times("float32", shipped.layer_ms, shipped.other_ms)
    identity = costs.config_costs(space.decode(space.identity()))
    assert identity.seconds * 1e3 == pytest.approx(sum(shipped.layer_ms.values()) + shipped.other_ms)
    # a layer at half width: its measured time times the profiles' ratio, the others unchanged
    producer = next(x for x in model.layers if x.op == "conv" and x.kernel == (1, 1))
    narrow = costs.config_costs(Config({producer.name: LayerChoice(width=0.5)}))
    assert narrow.seconds < identity.seconds
    # int8 with no int8 measurement: the fp32 time times the profiles' int8/fp32 ratio
    int8 = costs.config_costs(Config({producer.name: LayerChoice(w_bits=8, a_bits=8)}))
    assert int8.int8_s > 0 and int8.float_s < identity.seconds
    assert "measured in the shipped artifact (float32)" in costs.source()["model"]
    # with the uniform int8 artifact measured too, its own non-layer kernels count for int8 configs
    layer_int8 = {name: ms / 2 for name, ms in shipped.layer_ms.items()}
    costs.use_shipped_times("int8", layer_int8, shipped.other_ms / 4)
    uniform = Config({x.name: LayerChoice(w_bits=8, a_bits=8) for x in model.layers})
    all_int8 = costs.config_costs(uniform)
    assert all_int8.seconds * 1e3 == pytest.approx(sum(layer_int8.values()) + shipped.other_ms / 4)
    assert costs.config_costs(space.decode(space.identity())).seconds == pytest.approx(identity.seconds)
    # one int8 layer: the non-layer time moves from the fp32 figure toward the int8 one by its share
    mixed = costs.config_costs(Config({producer.name: LayerChoice(w_bits=8, a_bits=8)}))
    float_layers = sum(ms for name, ms in shipped.layer_ms.items() if name != producer.name)
    int8_ms = mixed.int8_s * 1e3
    other = shipped.other_ms + (shipped.other_ms / 4 - shipped.other_ms) * int8_ms / (float_layers + int8_ms)
    assert mixed.float_s * 1e3 == pytest.approx(float_layers + other)


def test_uniform_int8_is_a_candidate_when_it_fits(costs):
    """The searched front may hold only changes the simulator scores lower; uniform W8A8 is verified too
    when its estimate fits the budget, and not added twice or over the budget."""
    from hanasc.search.nsga2 import Budgets, Candidate
    from hanasc.search.seeds import uniform_int8_candidate

    class Flat:
        def predict(self, genomes):
            return np.full(len(genomes), 0.5)

    space = costs.space
    int8 = uniform_genome(space, (8, 8))
    lat = float(costs(int8[None])[0][0])
    (added,) = uniform_int8_candidate(space, Flat(), costs, Budgets(latency_ms=lat * 1.01), [])
    assert added.genome == int8.tolist() and added.latency_ms == pytest.approx(lat)
    assert uniform_int8_candidate(space, Flat(), costs, Budgets(latency_ms=lat * 1.01), [added]) == []
    assert uniform_int8_candidate(space, Flat(), costs, Budgets(latency_ms=lat * 0.5), []) == []
    other = Candidate(space.identity().tolist(), 0.9, lat, 1.0)
    assert len(uniform_int8_candidate(space, Flat(), costs, Budgets(latency_ms=lat * 1.01), [other])) == 1


def test_pareto_plot_keeps_predicted_and_held_out_on_separate_axes(tmp_path):
    from hanasc.compile.plots import HeldOutPanel, SearchPanel, pareto_plot

    panel = HeldOutPanel(
        "agreement", "latency ms (measured)", (10.0, 1.0), [(7.0, 0.95), (6.0, 0.4)], (7.0, 0.95)
    )
    search = SearchPanel([(8.0, 0.5)], [(7.0, 0.6)], (10.0, 0.7), (7.0, 0.6), 8.0, "t", "latency ms")
    labels = pareto_plot(tmp_path / "p.png", search, held_out=panel)
    assert labels == ["predicted score (search)", "agreement (held-out)"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_predictor_samples_are_held_apart_from_the_data_that_fits_ranges_and_refits():
    """The calibration split is divided by source image: views of one image stay on one side, both sides
    are used, and too few images leave the split as it was (None)."""
    from hanasc.compile.context import split_data
    from hanasc.compile.pipeline import _held_apart

    x = np.zeros((40, 1, 2, 2), np.float32)
    groups = np.repeat(np.arange(8), 5)  # 8 images, 5 views each
    split = split_data(x, None, groups, seed=0, source="test")
    fit, score = _held_apart(split, np.random.default_rng(0))
    assert len(fit) and len(score) and set(fit).isdisjoint(score)
    assert sorted([*fit, *score]) == list(range(len(split.calib_x)))
    calib_groups = split.calib_groups
    assert set(calib_groups[fit]).isdisjoint(calib_groups[score])
    few = split_data(x[:15], None, groups[:15], seed=0, source="test")  # 3 images: 1 or 2 calibrate
    assert _held_apart(few, np.random.default_rng(0)) is None


def test_simulator_keeps_refitters_for_two_ranges(test_models):
    from hanasc.frontend.calibration import calibrate
    from hanasc.search.simulator import Simulator

    model = hanasc.load_model(test_models["inverted_residual"])
    x = np.random.default_rng(0).standard_normal((8, *model.inputs[0].shape[1:])).astype(np.float32)
    first, second = calibrate(model, x[:4]), calibrate(model, x[4:])
    simulator = Simulator(model, batch=4)
    a, b = simulator._reconstruction(first), simulator._reconstruction(second)
    assert a is not None and b is not None and a is not b
    assert simulator._reconstruction(first) is a and simulator._reconstruction(second) is b


def test_a_search_that_missed_a_reachable_budget_says_so():
    """When the space's fastest corner fits the budget but the search found nothing under it, the error
    says to search longer instead of calling the budget unreachable."""
    from types import SimpleNamespace

    from hanasc.compile.pipeline import _nothing_found
    from hanasc.search.nsga2 import Budgets, Candidate

    run = SimpleNamespace(
        options=SimpleNamespace(budgets=Budgets(latency_ms=1.0)), info=SimpleNamespace(name="host")
    )
    evaluated = [Candidate([0], 0.9, 1.4, 1.0, None), Candidate([1], 0.8, 1.2, 1.0, None)]
    message = _nothing_found(run, evaluated, fastest_ms=0.3)
    assert "evaluated 2 configurations" in message and "1.20 ms" in message and "--generations" in message
    assert "fastest reachable latency 1.20 ms" in _nothing_found(run, evaluated, fastest_ms=1.5)
