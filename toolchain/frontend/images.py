"""Image inputs: folders with one sub-folder per class, preprocessing options, and packaged real images."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.frontend.datasets import DataError, Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


@dataclass
class Preprocess:
    """How an image becomes a model input: resize the short side, centre-crop, scale, normalize.

    The crop is ``size`` wide and ``height`` tall (``height`` None: square); the resize keeps the aspect
    ratio and makes the short side ``resize`` but never smaller than the crop (a 48x192 text-line model gets
    a centre strip of the photo)."""

    size: int = 224
    resize: int | None = 256  # short side before the centre crop; None resizes straight to the crop
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # on 0..1 pixel values
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"  # or BGR
    layout: str = "NCHW"  # or NHWC
    grayscale: bool = False
    crops: list[tuple[float, float, bool]] = field(default_factory=lambda: [(0.5, 0.5, False)])
    height: int | None = None  # crop height when the model's input is not square

    def apply(self, image) -> list[np.ndarray]:
        """The model inputs (one per crop view) for one PIL image."""
        from PIL import Image

        image = image.convert("L" if self.grayscale else "RGB")
        crop_w, crop_h = self.size, self.height or self.size
        if self.resize:
            w, h = image.size
            scale = max(self.resize / min(w, h), crop_w / w, crop_h / h)
            image = image.resize(
                (max(crop_w, round(w * scale)), max(crop_h, round(h * scale))), Image.BILINEAR
            )
        else:
            image = image.resize((crop_w, crop_h), Image.BILINEAR)
        views = []
        for fx, fy, flip in self.crops:
            w, h = image.size
            left, top = round((w - crop_w) * fx), round((h - crop_h) * fy)
            crop = image.crop((left, top, left + crop_w, top + crop_h))
            if flip:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            a = np.asarray(crop, dtype=np.float32) / 255.0
            a = a[..., None] if a.ndim == 2 else a
            if self.channel_order == "BGR":
                a = a[..., ::-1]
            a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            views.append(np.ascontiguousarray(a.transpose(2, 0, 1) if self.layout == "NCHW" else a))
        return views


FIVE_VIEWS = [(0.5, 0.5, False), (0.5, 0.5, True), (0.0, 0.0, False), (1.0, 1.0, False), (0.0, 1.0, True)]


def load_image_folder(folder: Path, preprocess: Preprocess) -> tuple[Dataset, np.ndarray]:
    """Images under ``folder/<class>/``; classes are the sorted sub-folder names (label = index).

    Returns the dataset and, per sample, the index of its source image (views of one image share it).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataError(f"{folder}: expected an .npz file or a folder with one sub-folder per class")
    xs, ys, groups = [], [], []
    image_index = 0
    for label, cls in enumerate(classes):
        for path in sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(path) as image:
                    views = preprocess.apply(image)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{path}: not a readable image ({exc})") from None
            xs += views
            ys += [label] * len(views)
            groups += [image_index] * len(views)
            image_index += 1
    if not xs:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return Dataset(np.stack(xs), np.asarray(ys), str(folder)), np.asarray(groups)


def foolbox_imagenet_dir() -> Path:
    """The folder of foolbox's 20 labelled ImageNet images (files ``imagenet_<i>_<label>.jpg``)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        raise DataError("the packaged ImageNet images need foolbox: pip install foolbox")
    return Path(spec.origin).parent / "data"


def load_foolbox_imagenet(preprocess: Preprocess) -> tuple[Dataset, np.ndarray]:
    """foolbox's 20 ImageNet validation images with their labels (views per ``preprocess.crops``)."""
    from PIL import Image

    folder = foolbox_imagenet_dir()
    paths = sorted(folder.glob("imagenet_*_*.jpg"))
    if not paths:
        raise DataError(f"{folder}: no imagenet_*.jpg files")
    xs, ys, groups = [], [], []
    for index, path in enumerate(paths):
        label = int(re.match(r"imagenet_\d+_(\d+)", path.stem)[1])
        with Image.open(path) as image:
            views = preprocess.apply(image)
        xs += views
        ys += [label] * len(views)
        groups += [index] * len(views)
    return Dataset(np.stack(xs), np.asarray(ys), f"foolbox ImageNet images ({folder})"), np.asarray(groups)
