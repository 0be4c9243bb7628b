"""The search: the space of Configs, how a Config is scored during search, and NSGA-II over it.

- :mod:`~hanasc.search.space` (genes x choices) and :mod:`~hanasc.search.architecture_samples`;
- the compile-once simulator: :mod:`~hanasc.search.simulator` over :mod:`~hanasc.search.simulation_graph`
  and :mod:`~hanasc.search.simulated_weights`; the accuracy predictor (:mod:`~hanasc.search.predictor`);
- per-layer kernel costs of a genome (:mod:`~hanasc.search.costs`);
- :mod:`~hanasc.search.nsga2` (pymoo NSGA-II, budgets, checkpoints), its starting points
  (:mod:`~hanasc.search.seeds`), the compile job's search rounds (:mod:`~hanasc.compile.rounds`) and the
  choice of the result among verified models (:mod:`~hanasc.search.selection`).
"""
