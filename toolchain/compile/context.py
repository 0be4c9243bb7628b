"""The compile job's inputs and run state: options, the data split, progress hooks and the run context
that every stage (references, search rounds, verification, report) reads instead of argument bags."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.budgets import Budgets
from hanasc.core.errors import HanascError
from hanasc.core.metrics import Metric
from hanasc.frontend.loading import LoadedModel
from hanasc.search.space import SearchSpace
from hanasc.targets.base import Target


@dataclass
class CompileOptions:
    target: str = "host"
    budgets: Budgets = field(default_factory=Budgets)
    space: str = "joint"
    seed: int = 0
    metric: str | None = None
    predictor_samples: int = 240
    predictor_images: int | None = None  # None: by model cost (predictor_image_count)
    population: int = 40
    generations: int = 25
    verify_candidates: int = 8
    rounds: int = 3
    refine_per_round: int = 12
    max_attempts: int = 6  # --verify-limit: candidates built and measured before giving up
    sensitivity_limit: int = 400  # single changes simulated alone (each layer's W8A8 first)
    ladder_points: int = 16  # points of the mixed-precision ladder (original -> uniform W8A8)
    measure_repeats: int = 15  # rounds of interleaved timing (host) or runs (RPC)
    resume: bool = False
    tune_minutes: float = 0.0
    rpc: str | None = None  # HOST:PORT of a TVM RPC server on the target device: latencies measured there
    max_loss: float = 1.0  # accuracy floor: points of the metric below the original's held-out score
    device: str | None = None  # whose latency calibration applies (hanasc calibrate --device)
    budget_confidence: float = 0.9  # a latency budget is met when the calibrated upper bound is under it
    finetune_minutes: float = 0.0  # distillation fine-tuning, shared by the best finetune_candidates
    finetune_candidates: int = 2
    # --compare: peer runtimes timed beside the result (None: all where it runs here; (): none)
    compare: tuple[str, ...] | None = None
    # the executor seam (hanasc.core.executor): None and None run everything in this process
    workers: int | None = None  # --workers N: builds on a local Ray with N CPUs
    cluster: str | None = None  # --cluster ray://HOST:PORT (or RAY_ADDRESS): builds on that Ray cluster


@dataclass
class Split:
    """Calibration part (ranges, predictor samples) and held-out part (reported accuracy)."""

    calib_x: np.ndarray
    calib_y: np.ndarray | None
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    description: dict
    calib_groups: np.ndarray | None = None  # source image of each calibration sample (views stay together)
    train_x: np.ndarray | None = None  # fine-tuning data (--train-data); the calibration split when None
    train_y: np.ndarray | None = None

    def training(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(x, y) fine-tuning learns from: the training data when given, else the calibration split."""
        if self.train_x is None:
            return self.calib_x, self.calib_y
        return self.train_x, self.train_y


def with_training(split: Split, x: np.ndarray, y: np.ndarray | None, source: str) -> Split:
    """``split`` with its own fine-tuning data (never used for ranges, the predictor or reported figures)."""
    description = {
        **split.description,
        "fine_tuning": {"source": source, "samples": len(x), "labels": y is not None},
    }
    return dataclasses.replace(split, train_x=x, train_y=y, description=description)


def split_data(
    x: np.ndarray, y: np.ndarray | None, groups: np.ndarray | None, seed: int, source: str
) -> Split:
    """Half the source images for calibration, half held out (views of one image stay together)."""
    groups = np.arange(len(x)) if groups is None else groups
    unique = np.unique(groups)
    if len(unique) < 2:
        raise HanascError(f"{source}: need at least 2 samples to split into calibration and held-out parts")
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(unique)[: len(unique) // 2].tolist())
    mask = np.array([g in held for g in groups])
    return Split(
        calib_x=x[~mask],
        calib_y=None if y is None else y[~mask],
        eval_x=x[mask],
        eval_y=None if y is None else y[mask],
        description={
            "source": source,
            "samples": len(x),
            "source_images": len(unique),
            "calibration": {
                "samples": int((~mask).sum()),
                "used_for": "activation ranges, predictor samples",
            },
            "held_out": {"samples": int(mask.sum()), "used_for": "reported accuracy of original and result"},
        },
        calib_groups=groups[~mask],
    )


@dataclass
class Stage:
    """Progress reporting hooks (the CLI shows rich bars)."""

    start: Callable[[str, int | None], None] = lambda name, total: None
    advance: Callable[[str], None] = lambda text="": None
    log: Callable[[str], None] = lambda text: None


@dataclass
class RunContext:
    """What the stages of one compile run share, built once by :mod:`hanasc.compile.pipeline`: the model and
    its data, the target, the activation ranges and simulator, the references on the held-out split, the
    search space and its cost model, the RPC session (if any) and the run's work folder."""

    model: LoadedModel
    info: Target
    ranges: object  # hanasc.frontend.calibration.ActivationRanges
    split: Split
    ref_eval: np.ndarray
    metric: Metric
    probe: list
    options: CompileOptions
    costs: object  # hanasc.search.costs.SearchCosts
    stage: Stage
    simulator: object  # hanasc.search.simulator.Simulator
    session: object | None = None
    space: SearchSpace | None = None
    work: Path | None = None
    rng: np.random.Generator | None = None
    reference: object | None = (
        None  # hanasc.cost_models.timing.HostReference: the original, timed beside candidates
    )
    search_ranges: object | None = None  # ranges fitted apart from the predictor samples (None: ``ranges``)
    # genome tuple -> hanasc.recovery.finetune.TunedWeights (kept ones)
    tuned: dict = field(default_factory=dict)

    @property
    def scoring_ranges(self):
        """The ranges the search's predictor samples are simulated with."""
        return self.ranges if self.search_ranges is None else self.search_ranges
