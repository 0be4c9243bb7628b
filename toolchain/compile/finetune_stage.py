"""The compile job's fine-tuning stage (``--finetune-minutes``): distillation over the best few shortlisted
candidates, each kept only when it scores better on the held-out split than before fine-tuning.

The budget is shared equally by ``--finetune-candidates`` candidates, those with the best held-out scores
after the data-light recovery. Training uses the user's training data (``--train-data``) when given, else
the calibration split (labels when the metric uses them and the data has them); the held-out split judges
the result, as it judges every candidate. Checkpoints live in the run's
work folder, so ``--resume`` continues an interrupted fine-tuning.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hanasc.compile.context import RunContext
from hanasc.core.errors import HanascError
from hanasc.passes.config import Config
from hanasc.recovery.bias_correction import recovered_weights
from hanasc.recovery.finetune import FinetuneSettings, finetune
from hanasc.recovery.torch_form import TorchForm
from hanasc.search.nsga2 import Candidate


def check_finetune(info, model, minutes: float) -> None:
    """Before any work: fine-tuned weights reach only bundles built from the Relax module (not OpenVINO's
    from ONNX), and every operator of the model needs a torch form."""
    if minutes <= 0:
        return
    info.check_tuned_weights("--finetune-minutes")
    try:
        from hanasc.recovery.torch_ops import unsupported_nodes
    except ImportError:
        raise HanascError(
            "--finetune-minutes needs torch: install hanasc with its torch extra (scripts/install.sh does)"
        ) from None

    missing = unsupported_nodes(model.onnx_model.graph)
    if missing:
        raise HanascError(f"--finetune-minutes: {model.path}: {missing[0]}; compile without fine-tuning")


class _SecondsBar:
    """A stage progress bar over the fine-tuning seconds (the stage advances one tick per call)."""

    def __init__(self, stage, name: str, total_s: float) -> None:
        self.stage, self.total, self.shown = stage, max(1, int(total_s)), 0
        stage.start(name, self.total)

    def __call__(self, seconds: float, text: str) -> None:
        while self.shown < min(int(seconds), self.total):
            self.stage.advance(text)
            self.shown += 1


def _checkpoint_name(genome: list[int], minutes: float, candidates: int, samples: int) -> str:
    key = json.dumps([list(map(int, genome)), minutes, candidates, samples])
    return f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def held_out_with(run: RunContext, config: Config, values: dict | None) -> np.ndarray:
    """Simulated outputs of ``config`` on the held-out split, from ``values`` when given."""
    feeds = run.simulator.feeds(config, run.ranges, values=values)
    return run.simulator.run(config, run.split.eval_x, run.ranges, feeds=feeds)


def finetune_shortlist(run: RunContext, ranked: list[Candidate], held_out: dict) -> list[dict]:
    """Fine-tune the best ``finetune_candidates`` of ``ranked``; keep a tuning that raises the held-out
    score, or keeps it and raises the metric's smooth companion (``held_out`` and ``run.tuned`` are
    updated). Returns one record per candidate for the report."""
    options, split = run.options, run.split
    picks = ranked[: options.finetune_candidates]
    if options.finetune_minutes <= 0 or not picks:
        return []
    settings = FinetuneSettings(
        minutes=options.finetune_minutes / len(picks),
        seed=options.seed,
        objective="kl" if run.metric.needs_classes else "mse",
    )
    train_x, train_y = split.training()
    teacher = run.simulator.run(Config(), train_x)
    labels = train_y if run.metric.needs_labels else None
    records = []
    for index, candidate in enumerate(picks):
        config = run.space.decode(candidate.genome)
        key = tuple(candidate.genome)
        before = held_out[key]
        run.stage.log(
            f"fine-tuning candidate {index + 1} of {len(picks)} for {settings.minutes:.1f} min "
            f"(held-out {run.metric.name} {before:.4f} after data-light recovery)"
        )
        checkpoint = run.work / _checkpoint_name(
            candidate.genome, options.finetune_minutes, len(picks), len(train_x)
        )
        if not options.resume:
            checkpoint.unlink(missing_ok=True)
        form = TorchForm(run.model, config, run.ranges, recovered_weights(run.model, config, run.ranges))
        bar = _SecondsBar(
            run.stage, f"fine-tuning candidate {index + 1} of {len(picks)}", settings.minutes * 60
        )
        tuned = finetune(form, train_x, teacher, labels, settings, checkpoint, bar)
        outputs = held_out_with(run, config, tuned.values)
        after = run.metric(outputs, split.eval_y, run.ref_eval)
        # ties on a discrete metric (agreement, top-1) go to the smooth companion score
        smooth = run.metric.smooth
        kept = (after, smooth(outputs, split.eval_y, run.ref_eval)) > (
            before,
            smooth(held_out_with(run, config, None), split.eval_y, run.ref_eval),
        )
        if kept:
            held_out[key] = after
            run.tuned[key] = tuned
        run.stage.log(
            f"fine-tuned: held-out {run.metric.name} {before:.4f} -> {after:.4f} "
            f"({'kept' if kept else 'not kept: no better on held-out data'})"
        )
        records.append(
            {
                "genome": candidate.genome,
                "held_out_before": round(before, 4),
                "held_out_after": round(after, 4),
                "kept": kept,
                **tuned.to_json(),
            }
        )
    return records
