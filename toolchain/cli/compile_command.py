"""The CLI side of ``hanasc compile`` and ``hanasc demo``: options -> data, progress bars, summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import hanasc
from hanasc.cli.common import raise_if_interrupted
from hanasc.compile.context import with_training
from hanasc.compile.pipeline import CompileOptions, Stage, compile_model, split_data
from hanasc.compile.report_markdown import beside_original
from hanasc.core.budgets import parse_budget, parse_confidence, parse_latency_budget, parse_relative_budget
from hanasc.core.errors import HanascError
from hanasc.core.metrics import choose_metric
from hanasc.frontend.datasets import load_npz
from hanasc.frontend.images import FIVE_VIEWS, Preprocess, load_foolbox_imagenet, load_image_folder
from hanasc.frontend.loading import LoadedModel
from hanasc.frontend.model_zoo import fetch
from hanasc.search.nsga2 import Budgets
from hanasc.targets import host
from hanasc.targets.isa import supports_vnni
from hanasc.targets.registry import get_target

BUILTIN_IMAGES = "imagenet-samples"


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise HanascError(
            f"{option} '{text}': expected comma-separated numbers, e.g. 0.485,0.456,0.406"
        ) from None


def preprocess_for(model: LoadedModel, size, resize, mean, std, channel_order, views) -> Preprocess:
    """Preprocessing from the options, defaulting to the zoo model's own (metadata) or ImageNet's."""
    meta = {p.key: p.value for p in model.onnx_model.metadata_props}
    zoo = json.loads(meta["hanasc.preprocess"]) if "hanasc.preprocess" in meta else {}
    shape = model.inputs[0].shape
    if channel_order not in ("RGB", "BGR"):
        raise HanascError(f"--channel-order '{channel_order}': RGB or BGR")
    if views not in (1, 5):
        raise HanascError(f"--views {views}: 1 or 5")
    square = size is not None or int(shape[-1]) == int(shape[-2])
    return Preprocess(
        size=size or int(shape[-1]),
        height=None if square else int(shape[-2]),  # a non-square input: crops of its own shape
        resize=resize if resize is not None else zoo.get("resize", 256),
        mean=_floats(mean, "--mean") or tuple(zoo.get("mean", (0.485, 0.456, 0.406))),
        std=_floats(std, "--std") or tuple(zoo.get("std", (0.229, 0.224, 0.225))),
        channel_order=channel_order,
        grayscale=shape[1] == 1,
        crops=FIVE_VIEWS if views == 5 else [(0.5, 0.5, False)],
    )


def load_data(model: LoadedModel, data: str | None, preprocess: Preprocess):
    """(x, y, groups, source) from --data."""
    if data is None:
        raise HanascError("--data is needed: an .npz with x (and y), an image folder, or 'imagenet-samples'")
    if data == BUILTIN_IMAGES:
        ds, groups = load_foolbox_imagenet(preprocess)
    elif Path(data).suffix == ".npz":
        ds, groups = load_npz(Path(data), model.inputs[0]), None
    else:
        ds, groups = load_image_folder(Path(data), preprocess)
    if ds.x.shape[1:] != tuple(model.inputs[0].shape[1:]):
        raise HanascError(
            f"{data}: samples of shape {ds.x.shape[1:]}, the model takes {model.inputs[0].shape[1:]}"
        )
    return ds.x.astype(np.float32), ds.y, groups, ds.source


def _checked_training(model: LoadedModel, metric, training) -> tuple:
    """(x, y, source) of --train-data, checked like --data (labels only where the metric uses them)."""
    x, y, _, source = training
    if metric.needs_labels and y is not None:
        model.check_labels(y, source)
    model.check_finite_activations(x, source)
    return x, y if metric.needs_labels else None, source


class _Bars:
    """rich progress bars for the pipeline's stages."""

    def __init__(self, progress: Progress, console: Console) -> None:
        self.progress, self.console, self.task = progress, console, None

    def start(self, name: str, total: int | None) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(name, total=total, status="")

    def advance(self, text: str = "") -> None:
        raise_if_interrupted()  # a Ctrl-C a fallback swallowed inside TVM stops the run at the next tick
        if self.task is not None:
            self.progress.update(self.task, advance=1, status=text)

    def log(self, text: str) -> None:
        raise_if_interrupted()
        self.console.print(f"[dim]·[/dim] {text}")  # stdout: stderr keeps bars and errors


def _run(
    model,
    options: CompileOptions,
    data_args,
    out: Path,
    metric_name,
    console,
    err_console,
    training=None,
):
    x, y, groups, source = data_args
    metric = choose_metric(metric_name, y is not None, model.is_classifier())
    if metric.needs_labels:
        model.check_labels(y, source)  # before the search, not after it
    if metric.needs_classes:
        model.check_classifier_output(metric.name)
    model.check_finite_activations(x, source)
    split = split_data(x, y, groups, options.seed, source)
    if training is not None:
        split = with_training(split, *_checked_training(model, metric, training))
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=err_console) as progress:
        bars = _Bars(progress, console)
        try:
            result = compile_model(
                model,
                split,
                options,
                out,
                metric,
                Stage(start=bars.start, advance=bars.advance, log=bars.log),
            )
        except HanascError:
            progress.live.transient = True  # an error is one line on stderr: the bars are cleared
            raise
    r, o = result.report["result"], result.report["original"]
    tuned = result.report.get("recovery", {}).get("fine_tuning", {}).get("result_fine_tuned", False)
    console.print(
        f"original: {o['latency_ms']['value']} ms ({o['latency_ms']['source']}), {metric.name} "
        f"{o['accuracy']['value']}\nresult:   {r['latency_ms']['value']} ms ({r['latency_ms']['source']}"
        f"{beside_original(r['latency_ms'])}), "
        f"{metric.name} {r['accuracy']['value']} (held-out{', fine-tuned' if tuned else ''}), "
        f"memory {r['memory_mb']['value']} MB "
        f"({r['memory_mb']['source']})"
    )
    for warning in result.report.get("warnings", []):
        err_console.print(f"[yellow]warning: {warning}[/yellow]")
    files = "report.json, pareto.png, breakdown.png, config.json" + (", tuned_weights.npz" if tuned else "")
    console.print(f"report: {out / 'report.md'} (and {files})")
    return result


@dataclass
class CompileRequest:
    """The options of ``hanasc compile`` as the user gave them (parsed and checked by :func:`run_compile`)."""

    target: str = "host"
    budget: str | None = None
    memory: str | None = None
    energy: str | None = None
    data: str | None = None
    out: Path = Path("out")
    metric: str | None = None
    space: str = "joint"
    seed: int = 0
    generations: int = 25
    population: int = 40
    samples: int = 240
    resume: bool = False
    tune_minutes: float = 0.0
    rpc: str | None = None
    size: int | None = None
    resize: int | None = None
    mean: str | None = None
    std: str | None = None
    channel_order: str = "RGB"
    views: int = 1
    max_loss: float = 1.0
    verify_limit: int = 6
    device: str | None = None
    budget_confidence: float | None = None
    finetune_minutes: float = 0.0
    finetune_candidates: int = 2
    train_data: str | None = None  # fine-tuning data (same formats as data)


def run_compile(model: LoadedModel, request: CompileRequest, console: Console, err_console: Console) -> None:
    """Check the options, load the data, run the pipeline with progress bars, print the summary."""
    r = request
    space = r.space
    if space not in ("joint", "arch", "quant"):
        raise HanascError(f"--space {space}: joint, arch or quant")
    if not r.max_loss >= 0:
        raise HanascError(f"--max-loss {r.max_loss:g}: must be 0 or more (points of the metric)")
    if not r.finetune_minutes >= 0:
        raise HanascError(f"--finetune-minutes {r.finetune_minutes:g}: must be 0 or more")
    if r.finetune_candidates < 1:
        raise HanascError(f"--finetune-candidates {r.finetune_candidates}: must be 1 or more")
    if r.train_data is not None and not r.finetune_minutes > 0:
        raise HanascError(f"--train-data {r.train_data}: only fine-tuning uses it; give --finetune-minutes")
    if r.train_data is not None and r.train_data == r.data:
        raise HanascError(
            f"--train-data {r.train_data} is the --data: fine-tuning on it would train on the held-out half "
            "the result is judged by; give training data of its own"
        )

    info = get_target(r.target)
    latency_ms, latency_fraction = parse_latency_budget(r.budget)
    memory_mb, memory_fraction = parse_relative_budget(r.memory, "memory", "--memory")
    options = CompileOptions(
        target=info.name,
        budgets=Budgets(
            latency_ms,
            memory_mb,
            parse_budget(r.energy, "energy", "--energy"),
            latency_fraction,
            memory_fraction,
        ),
        space=space,
        seed=r.seed,
        metric=r.metric,
        predictor_samples=r.samples,
        population=r.population,
        generations=r.generations,
        resume=r.resume,
        tune_minutes=r.tune_minutes,
        rpc=r.rpc,
        max_loss=r.max_loss,
        max_attempts=r.verify_limit,
        device=r.device,
        budget_confidence=parse_confidence(r.budget_confidence),
        finetune_minutes=r.finetune_minutes,
        finetune_candidates=r.finetune_candidates,
    )
    preprocess = preprocess_for(model, r.size, r.resize, r.mean, r.std, r.channel_order, r.views)
    data = load_data(model, r.data, preprocess)
    training = None if r.train_data is None else load_data(model, r.train_data, preprocess)
    _run(model, options, data, Path(r.out), r.metric, console, err_console, training)


def demo_budget_fraction(target) -> tuple[float, str]:
    """The demo's default budget for ``target`` (a share of the original's latency) and why: 0.6 where
    the int8 kernels run on AVX512-VNNI (uniform W8A8 EfficientNet-Lite0 measured 0.58-0.61x its fp32 on
    a Zen 4; two demo runs at 0.6 met it at 0.579x, agreement 0.98, 5 min 15 s), else 0.8 (AVX2's int8 was
    0.71-0.77x of fp32 on a Zen 3: a 0.6 budget cannot be met there within the floor)."""
    if supports_vnni(target):
        return 0.6, "this CPU's default: its int8 kernels run on AVX512-VNNI"
    return 0.8, "this CPU's default: no AVX512-VNNI int8 kernels here"


def run_demo(
    out: Path, budget_fraction: float | None, max_loss: float, console: Console, err_console: Console
) -> None:
    """EfficientNet-Lite0 for the host at ``budget_fraction`` of its measured latency (None: the CPU's
    default, :func:`demo_budget_fraction`), agreement kept within ``max_loss`` points."""
    reason = "--budget-fraction"
    if budget_fraction is None:
        budget_fraction, reason = demo_budget_fraction(host.tvm_target())
    if not budget_fraction > 0:
        raise HanascError(f"--budget-fraction {budget_fraction:g}: must be positive, e.g. 0.8")

    path = fetch("efficientnet-lite0")
    console.print(f"EfficientNet-Lite0 (ImageNet weights) from {path}")
    model = hanasc.load_model(path)
    console.print(
        f"budget: {budget_fraction:g} x the original's latency ({reason}), measured on this host by the "
        "compile below"
    )
    options = CompileOptions(
        target="host",
        budgets=Budgets(latency_fraction=budget_fraction),
        metric="agreement",
        predictor_samples=200,
        population=32,
        generations=20,
        max_loss=max_loss,
    )
    preprocess = preprocess_for(model, None, None, None, None, "RGB", 5)
    data = load_data(model, BUILTIN_IMAGES, preprocess)
    _run(model, options, data, out, "agreement", console, err_console)
