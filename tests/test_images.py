"""Image preprocessing: square crops as before, and crops of a non-square model's own shape."""

from __future__ import annotations

import numpy as np
from builders import single_op_model
from PIL import Image

import hanasc
from hanasc.cli.compile_command import preprocess_for
from hanasc.frontend.images import FIVE_VIEWS, Preprocess


def _gradient(width: int, height: int) -> Image.Image:
    """Red grows left to right, green top to bottom: a crop's mean tells where it was taken."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


def test_square_crops_keep_their_shape_and_centre():
    plain = Preprocess(size=32, resize=40, mean=(0, 0, 0), std=(1, 1, 1), crops=FIVE_VIEWS)
    views = plain.apply(_gradient(90, 60))
    assert [v.shape for v in views] == [(3, 32, 32)] * 5
    centre = views[0]
    assert abs(centre[0].mean() - 0.5) < 0.02 and abs(centre[1].mean() - 0.5) < 0.02


def test_non_square_model_gets_crops_of_its_own_shape(tmp_path):
    model = hanasc.load_model(single_op_model("Relu", tmp_path / "line.onnx", (1, 3, 48, 192)))
    preprocess = preprocess_for(model, None, None, None, None, "RGB", 5)
    assert (preprocess.size, preprocess.height) == (192, 48)
    views = preprocess.apply(_gradient(300, 200))
    assert [v.shape for v in views] == [(3, 48, 192)] * 5
    square = preprocess_for(hanasc.load_model(single_op_model("Relu", tmp_path / "sq.onnx", (1, 3, 8, 8))),
                            None, None, None, None, "RGB", 1)  # fmt: skip
    assert square.height is None and square.apply(_gradient(20, 10))[0].shape == (3, 8, 8)
