"""The options of the API's jobs as the user gives them (the CLI's options, same names and defaults), and
the model argument every job takes: a path, a zoo name or an already loaded model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from hanasc.core.errors import HanascError
from hanasc.core.executor import check_executor_options, cluster_address
from hanasc.frontend.loading import LoadedModel, load_model
from hanasc.frontend.model_zoo import resolve_model_arg
from hanasc.frontend.onnx_loader import parse_input_shape

ModelArg = str | PathLike | LoadedModel
InputShapes = Mapping[str, Sequence[int]] | Iterable[str] | None


@dataclass(frozen=True)
class CompileRequest:
    """The options of ``hanasc compile`` (``--verify-limit`` is ``verify_limit``, ...), with its defaults;
    :func:`hanasc.compile` takes them as keyword arguments and checks them as the CLI does."""

    target: str = "host"
    budget: str | None = None
    memory: str | None = None
    energy: str | None = None
    data: str | PathLike | None = None
    out: str | PathLike = Path("out")
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
    train_data: str | PathLike | None = None  # fine-tuning data (same formats as data)
    compare: str | None = None  # onnxruntime,openvino | none (None: both where the result runs here)
    workers: int | None = None  # verification builds on a local Ray with this many CPUs
    cluster: str | None = None  # ray://HOST:PORT of a Ray cluster to build on (None: RAY_ADDRESS, if set)

    @classmethod
    def from_options(cls, options: Mapping[str, object], command: str = "compile") -> CompileRequest:
        """The request from keyword options; an unknown name is refused in one line (not a TypeError)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            raise HanascError(f"{command}: unknown option '{unknown[0]}' (options: {', '.join(names)})")
        return cls(**options)  # type: ignore[arg-type]

    def check(self) -> None:
        """The checks that need no model or data (the CLI's wording: one line naming the option)."""
        if self.space not in ("joint", "arch", "quant"):
            raise HanascError(f"--space {self.space}: joint, arch or quant")
        if not self.max_loss >= 0:
            raise HanascError(f"--max-loss {self.max_loss:g}: must be 0 or more (points of the metric)")
        if self.verify_limit < 1:
            raise HanascError(f"--verify-limit {self.verify_limit}: must be 1 or more")
        if not self.finetune_minutes >= 0:
            raise HanascError(f"--finetune-minutes {self.finetune_minutes:g}: must be 0 or more")
        if self.finetune_candidates < 1:
            raise HanascError(f"--finetune-candidates {self.finetune_candidates}: must be 1 or more")
        check_executor_options(self.workers, cluster_address(self.cluster))
        train, data = self.train_data, self.data
        if train is not None and not self.finetune_minutes > 0:
            raise HanascError(f"--train-data {train}: only fine-tuning uses it; give --finetune-minutes")
        if train is not None and str(train) == str(data):
            raise HanascError(
                f"--train-data {train} is the --data: fine-tuning on it would train on the held-out half "
                "the result is judged by; give training data of its own"
            )


def input_shapes(shapes: InputShapes) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` values (``NAME=1x3x224x224`` strings) or a mapping name -> shape."""
    if shapes is None:
        return {}
    if isinstance(shapes, Mapping):
        return {str(k): tuple(int(d) for d in v) for k, v in shapes.items()}
    if isinstance(shapes, str):
        shapes = [shapes]
    return dict(parse_input_shape(s) for s in shapes)


def load(model: ModelArg, input_shape: InputShapes = None) -> LoadedModel:
    """The model a job works on: a loaded model as is, else an ONNX path or a zoo name, loaded."""
    if isinstance(model, LoadedModel):
        if input_shape:
            raise HanascError("input_shape: give it to hanasc.load_model, not with an already loaded model")
        return model
    return load_model(resolve_model_arg(str(model)), input_shapes(input_shape))
