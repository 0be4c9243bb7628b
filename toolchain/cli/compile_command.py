"""``hanasc compile`` and ``hanasc demo``: their options, progress bars and summary; the work is
:func:`hanasc.api.compile`'s. Registered on the Typer app by :mod:`hanasc.cli.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hanasc import api
from hanasc.api.data import BUILTIN_IMAGES, preprocess_for
from hanasc.api.results import CompileResult
from hanasc.cli.common import InputShapeOpt, raise_if_interrupted
from hanasc.cli.common import console as _console
from hanasc.core.errors import HanascError
from hanasc.frontend.model_zoo import fetch
from hanasc.targets import host
from hanasc.targets.isa import supports_vnni

__all__ = ["compile_", "demo", "demo_budget_fraction", "preprocess_for"]  # preprocess_for: bench scripts


def _opt(help_: str, *names: str, **kwargs) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_, **kwargs)


IMAGES = "Images: "


def compile_(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name such as efficientnet-lite0.")],
    target: Annotated[str, _opt("Target (see `hanasc targets`).", "--target", "-t")] = "host",
    budget: Annotated[
        str | None, _opt("Latency budget, e.g. 8ms, or a share of the original's latency, e.g. 0.5x.")
    ] = None,
    memory: Annotated[
        str | None,
        _opt("Memory budget (weights + peak activations), e.g. 2MB, or 0.5x (a share of the original's)."),
    ] = None,
    energy: Annotated[str | None, _opt("Energy budget per inference, e.g. 5mJ.")] = None,
    data: Annotated[
        str | None,
        _opt(
            ".npz of the model's input(s) keyed by input name (or x; labels y), an image folder (one "
            "sub-folder per class), or 'imagenet-samples' (labelled ImageNet images shipped in foolbox)."
        ),
    ] = None,
    out: Annotated[Path, _opt("Output folder (written atomically).", "--out", "-o")] = Path("out"),
    metric: Annotated[
        str | None,
        _opt(
            "top1 | agreement | kl | fidelity (default: top1 with labels, agreement without; fidelity, R² "
            "against the original, when the output is not (batch, classes))."
        ),
    ] = None,
    space: Annotated[str, _opt("joint | arch | quant: which genes to search.")] = "joint",
    seed: Annotated[int, _opt("Makes the run repeatable.")] = 0,
    generations: Annotated[int, _opt("NSGA-II generations.")] = 25,
    population: Annotated[int, _opt("NSGA-II population.")] = 40,
    samples: Annotated[int, _opt("Configs evaluated to train the accuracy predictor.")] = 240,
    resume: Annotated[bool, _opt("Resume an interrupted run with the same arguments.")] = False,
    tune_minutes: Annotated[
        float,
        _opt(
            "MetaSchedule tuning of the result's kernels (host; cortex-a78/jetson-orin with --rpc), kept in "
            "a per-target database that later compiles reuse."
        ),
    ] = 0.0,
    rpc: Annotated[
        str | None, _opt("TVM RPC server HOST:PORT on the target device: latencies are measured there.")
    ] = None,
    size: Annotated[int | None, _opt(IMAGES + "crop size (default: the model's input).")] = None,
    resize: Annotated[int | None, _opt(IMAGES + "short side before the centre crop.")] = None,
    mean: Annotated[str | None, _opt(IMAGES + "per-channel mean on 0..1, e.g. 0.485,0.456,0.406")] = None,
    std: Annotated[str | None, _opt(IMAGES + "per-channel std on 0..1.")] = None,
    channel_order: Annotated[str, _opt(IMAGES + "RGB or BGR.")] = "RGB",
    views: Annotated[int, _opt(IMAGES + "crop/flip views per image (1 or 5).")] = 1,
    max_loss: Annotated[
        float,
        _opt(
            "Accuracy floor: the result may lose at most this many points of the metric (1 point = 0.01 "
            "of top-1/agreement) against the original on held-out data."
        ),
    ] = 1.0,
    verify_limit: Annotated[
        int,
        _opt(
            "Candidates built and measured, best held-out first, before giving up (each costs a build and "
            "a timing: seconds to a minute or two).",
            min=1,
        ),
    ] = 6,
    device: Annotated[
        str | None, _opt("Device whose latency calibration applies (see `hanasc calibrate --device`).")
    ] = None,
    budget_confidence: Annotated[
        float | None,
        _opt(
            "A latency budget is met only when the upper end of this one-sided interval (from the device "
            "calibration's held-out error) is under it; default 0.9."
        ),
    ] = None,
    finetune_minutes: Annotated[
        float,
        _opt(
            "Recovery by fine-tuning: distil the original into the best candidates for this many minutes "
            "in all (on --train-data, else the calibration split; labels when the metric uses them); "
            "resumable with --resume."
        ),
    ] = 0.0,
    finetune_candidates: Annotated[
        int, _opt("How many of the best candidates share the fine-tuning minutes.")
    ] = 2,
    train_data: Annotated[
        str | None,
        _opt(
            "Fine-tuning data, same formats as --data (labels used when the metric uses them): fine-tuning "
            "learns from it instead of the calibration split. Needs --finetune-minutes."
        ),
    ] = None,
    compare: Annotated[
        str | None,
        _opt(
            "Runtimes timed beside the result on this machine, fp32 and int8, with their held-out metric: "
            "onnxruntime,openvino (the default where the result runs here) or none."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        _opt(
            "Build the verification candidates on a local Ray with this many CPUs, the next N at once "
            "(timed one at a time after each batch); needs `pip install hanasc[cluster]`."
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        _opt(
            "Ray cluster to build on, ray://HOST:PORT (default: RAY_ADDRESS when set); see docs/scale-out.md."
        ),
    ] = None,
    input_shape: InputShapeOpt = None,
) -> None:
    """Search per-layer quantization and architecture changes under budgets; compile and verify the winner.

    Writes OUT/ with the artifact, config.json (replay with `hanasc apply`), report.json, report.md,
    pareto.png and breakdown.png.

    Examples:

      hanasc compile model.onnx --target host --budget 8ms --data calib.npz --out out/

      hanasc compile efficientnet-lite0 --budget 120ms --memory 6MB --data imagenet-samples --views 5

      hanasc compile model.onnx --target cortex-a78 --budget 8ms --data images/ --space quant
    """
    options = {k: v for k, v in locals().items() if k not in ("model", "input_shape")}
    run_compile(model, input_shape, options, _console(), _console(stderr=True))


class _Bars:
    """rich progress bars for the pipeline's stages (a :class:`hanasc.api.compile_job.Progress`)."""

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


def run_compile(model, input_shape, options: dict, console: Console, err_console: Console) -> CompileResult:
    """:func:`hanasc.api.compile` with progress bars on ``err_console``, then the summary on ``console``."""
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=err_console) as progress:
        try:
            result = api.compile(model, input_shape=input_shape, progress=_Bars(progress, console), **options)
        except HanascError:
            progress.live.transient = True  # an error is one line on stderr: the bars are cleared
            raise
    print_summary(result, console, err_console)
    return result


def print_summary(result: CompileResult, console: Console, err_console: Console) -> None:
    """The original and the result, each figure with its provenance; warnings; where the report is."""
    o, r = result.original, result.result
    tuned = result.report.get("recovery", {}).get("fine_tuning", {}).get("result_fine_tuned", False)
    console.print(
        f"original: {o.latency_ms.value} ms ({o.latency_ms.provenance}), {result.metric} {o.accuracy.value}\n"
        f"result:   {r.latency_ms.value} ms ({r.latency_ms.provenance}), {result.metric} {r.accuracy.value} "
        f"(held-out{', fine-tuned' if tuned else ''}), memory {r.memory_mb.value} MB ({r.memory_mb.source})"
    )
    compare = result.report.get("compare")
    if compare and "summary" in compare:  # the user's own runtimes, timed alternately with the result
        console.print(f"against:  {compare['summary']} ({compare['result']['provenance']})")
    elif compare:
        console.print(f"against:  {compare['absent']}")
    for warning in result.warnings:
        err_console.print(f"[yellow]warning: {warning}[/yellow]")
    files = "report.json, pareto.png, breakdown.png, config.json" + (", tuned_weights.npz" if tuned else "")
    console.print(f"report: {result.artifact.report_md} (and {files})")


def demo_budget_fraction(target) -> tuple[float, str]:
    """The demo's default budget for ``target`` (a share of the original's latency) and why: 0.6 where
    the int8 kernels run on AVX512-VNNI (uniform W8A8 EfficientNet-Lite0 measured 0.58-0.61x its fp32 on
    a Zen 4; two demo runs at 0.6 met it at 0.579x, agreement 0.98, 5 min 15 s), else 0.8 (AVX2's int8 was
    0.71-0.77x of fp32 on a Zen 3: a 0.6 budget cannot be met there within the floor)."""
    if supports_vnni(target):
        return 0.6, "this CPU's default: its int8 kernels run on AVX512-VNNI"
    return 0.8, "this CPU's default: no AVX512-VNNI int8 kernels here"


def demo(
    out: Annotated[Path, _opt("Output folder.", "--out", "-o")] = Path("hanasc-demo"),
    budget_fraction: Annotated[
        float | None,
        _opt(
            "Budget as a share of the original's latency (default: 0.6 where the CPU runs int8 on "
            "AVX512-VNNI, else 0.8)."
        ),
    ] = None,
    max_loss: Annotated[
        float, _opt("Accuracy floor: agreement points the result may lose (0.9 kept at 10).")
    ] = 10.0,
) -> None:
    """Run the main job on the bundled default: EfficientNet-Lite0 (ImageNet weights) for the host.

    Measures the original, then compiles with a budget of 0.6 of its measured latency (0.8 on CPUs without
    AVX512-VNNI int8 kernels) and an accuracy floor of agreement 0.9, using the labelled ImageNet images
    that ship in the foolbox package (5 crop/flip views each).

    Example:

      hanasc demo
    """
    console, err_console = _console(), _console(stderr=True)
    reason = "--budget-fraction"
    if budget_fraction is None:
        budget_fraction, reason = demo_budget_fraction(host.tvm_target())
    if not budget_fraction > 0:
        raise HanascError(f"--budget-fraction {budget_fraction:g}: must be positive, e.g. 0.8")
    path = fetch("efficientnet-lite0")
    console.print(f"EfficientNet-Lite0 (ImageNet weights) from {path}")
    console.print(
        f"budget: {budget_fraction:g} x the original's latency ({reason}), measured on this host by the "
        "compile below"
    )
    options = {
        "budget": f"{budget_fraction!r}x",
        "metric": "agreement",
        "data": BUILTIN_IMAGES,
        "views": 5,
        "samples": 200,
        "population": 32,
        "generations": 20,
        "max_loss": max_loss,
        "out": out,
    }
    run_compile(path, None, options, console, err_console)
