"""The data a job reads, as the user holds it: an ``.npz`` (arrays keyed by the model's input names, or a
one-input model's ``x`` or single array; labels ``y``: :mod:`hanasc.frontend.datasets`), an image folder
(one sub-folder per class) or the ImageNet samples shipped in a package; and the image preprocessing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError
from hanasc.frontend.datasets import load_npz
from hanasc.frontend.images import FIVE_VIEWS, Preprocess, load_foolbox_imagenet, load_image_folder
from hanasc.frontend.loading import LoadedModel

BUILTIN_IMAGES = "imagenet-samples"


@dataclass(frozen=True)
class LoadedData:
    """Samples of the model's (first) input, labels, the source image of each sample (views of one image
    share it; None: one sample each), the source's name, and every input by name for multi-input data."""

    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray | None
    source: str
    inputs: dict[str, np.ndarray]


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


def load_data(model: LoadedModel, data: str | PathLike | None, preprocess: Preprocess) -> LoadedData:
    """The samples of ``--data``: an ``.npz``, an image folder or 'imagenet-samples'."""
    if data is None:
        raise HanascError(
            "--data is needed: an .npz of the model's inputs (and y), an image folder, or 'imagenet-samples'"
        )
    data = str(data)
    if data == BUILTIN_IMAGES:
        ds, groups = load_foolbox_imagenet(preprocess)
    elif Path(data).suffix == ".npz":
        ds, groups = load_npz(Path(data), model.inputs), None
    else:
        ds, groups = load_image_folder(Path(data), preprocess)
    if ds.x.shape[1:] != tuple(model.inputs[0].shape[1:]):
        raise HanascError(
            f"{data}: samples of shape {ds.x.shape[1:]}, the model takes {model.inputs[0].shape[1:]}"
        )
    return LoadedData(ds.x.astype(np.float32), ds.y, groups, ds.source, ds.feeds(model.inputs))


def calibration_samples(model: LoadedModel, data: str | PathLike | None):
    """``apply --data`` / ``costs --data``: the ``.npz``'s samples (an array for a one-input model, input
    name -> array for several inputs), or None without data."""
    if data is None:
        return None
    ds = load_npz(Path(data), model.inputs)
    return ds.x if len(model.inputs) == 1 else ds.feeds(model.inputs)
