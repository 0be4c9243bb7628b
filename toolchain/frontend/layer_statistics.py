"""Second-order statistics of each layer's input patches: what least-squares reconstruction refits against.

For a layer ``y = W p + b`` over input patches ``p`` (a dense layer's input row, a conv's im2col column:
``cin * kh * kw`` entries in OIHW weight order), the output error of a changed weight ``W'`` is
``E||(W - W') p||^2 = tr((W - W') C (W - W')^T) + ||(W - W') mu||^2``; the mean term is bias correction's
(:mod:`hanasc.recovery.bias_correction`), the covariance ``C`` is kept here. Depthwise convs keep one
``kh*kw``
covariance per channel. Layers whose patch would exceed :data:`MAX_PATCH` entries (and grouped, non-depthwise
convs) get none: reconstruction leaves them to bias correction.

Statistics are of the ORIGINAL model's activations on the calibration split, so a refit is a function of
the Config and these statistics alone (the simulator, the materialized module and ``hanasc apply`` agree).
Each covariance is kept for two halves of the calibration batches, so that a refit is cross-validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import CalibrationError
from hanasc.core.layers import LayerInfo, node_attr
from hanasc.passes.channel_groups import channel_groups

MAX_PATCH = 2304  # patch entries (cin * kh * kw): a 2304^2 float32 covariance is 21 MB
POSITIONS_PER_SAMPLE = 256  # output positions sampled per calibration sample (deterministic)
FLUSH_ROWS = 2048  # patches buffered before one product


@dataclass(frozen=True)
class PatchGeometry:
    """How a layer reads its input: kernel, strides, pads (top, left, bottom, right), dilations, groups."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    depthwise: bool

    @classmethod
    def of(cls, layer: LayerInfo, node) -> PatchGeometry | None:
        """The geometry of ``layer`` (its ONNX ``node``), or None when no statistics are kept for it."""
        if layer.op == "dense":
            return cls((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False)
        if layer.op == "grouped_conv" or len(layer.kernel) != 2:
            return None
        if str(node_attr(node, "auto_pad", b"NOTSET")).strip("b'\"") not in ("NOTSET", ""):
            return None
        pads = tuple(int(p) for p in node_attr(node, "pads", [0, 0, 0, 0]))
        geometry = cls(
            (int(layer.kernel[0]), int(layer.kernel[1])),
            tuple(int(s) for s in node_attr(node, "strides", [1, 1])),
            (pads[0], pads[1], pads[2], pads[3]),
            tuple(int(d) for d in node_attr(node, "dilations", [1, 1])),
            layer.op == "depthwise_conv",
        )
        return geometry if geometry.depthwise or geometry.patch_size(layer) <= MAX_PATCH else None

    def patch_size(self, layer: LayerInfo) -> int:
        return int(layer.weight_shape[1]) * self.kernel[0] * self.kernel[1]


def conv_patches(x: np.ndarray, g: PatchGeometry, positions: np.ndarray | None) -> np.ndarray:
    """Input patches of an NCHW sample batch ``x`` at output ``positions`` (all if None): ``(P, C*kh*kw)``
    in OIHW weight order, or ``(C, kh*kw, P)`` for a depthwise conv (one gather, no transposing copy)."""
    top, left, bottom, right = g.pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.strides, g.dilations
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    flat = np.arange(x.shape[0] * oh * ow) if positions is None else positions
    b, rest = np.divmod(flat, oh * ow)
    oy, ox = np.divmod(rest, ow)
    dy, dx = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    rows = dy.reshape(-1, 1) + oy[None, :] * sh  # (k, P)
    cols = dx.reshape(-1, 1) + ox[None, :] * sw
    if g.depthwise:
        return np.moveaxis(x, 1, 0)[:, b[None, :], rows, cols]  # (C, k, P)
    channels = np.arange(x.shape[1])[None, :, None]
    return x[b[:, None, None], channels, rows.T[:, None, :], cols.T[:, None, :]].reshape(len(flat), -1)


def output_positions(x: np.ndarray, g: PatchGeometry) -> int:
    top, left, bottom, right = g.pads
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.strides, g.dilations
    oh = (x.shape[2] + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] + left + right - dw * (kw - 1) - 1) // sw + 1
    return x.shape[0] * oh * ow


@dataclass
class _Moments:
    """Running sums of a layer's patches: ``sum p``, ``sum p p^T`` (per channel for depthwise), count.

    Patches are buffered and multiplied in float32 blocks of at least :data:`FLUSH_ROWS` rows (one BLAS
    product per block instead of one per sample), and summed in float64.
    """

    total: np.ndarray
    outer: np.ndarray
    count: int = 0
    pending: list = field(default_factory=list)
    pending_rows: int = 0

    def add(self, patches: np.ndarray) -> None:
        """Add ``(P, D)`` patches, or ``(C, k, P)`` per-channel patches of a depthwise conv."""
        self.pending.append(np.asarray(patches, dtype=np.float32))
        self.pending_rows += patches.shape[-1] if patches.ndim == 3 else len(patches)
        if self.pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        from threadpoolctl import threadpool_limits

        if not self.pending:
            return
        with threadpool_limits(1, user_api="blas"):  # many small products: threads only contend
            self._multiply()

    def _multiply(self) -> None:
        if self.pending[0].ndim == 3:  # depthwise (C, k, P)
            per_channel = np.concatenate(self.pending, axis=2)
            self.total += per_channel.sum(axis=2, dtype=np.float64)
            self.outer += np.matmul(per_channel, per_channel.transpose(0, 2, 1))
        else:
            patches = np.concatenate(self.pending)
            self.total += patches.sum(axis=0, dtype=np.float64)
            self.outer += patches.T @ patches
        self.count += self.pending_rows
        self.pending, self.pending_rows = [], 0

    def covariance(self) -> np.ndarray:
        self.flush()
        mean = self.total / self.count
        outer = self.outer / self.count
        if outer.ndim == 3:  # depthwise: (C, k, k)
            return (outer - mean[:, :, None] * mean[:, None, :]).astype(np.float32)
        return (outer - np.outer(mean, mean)).astype(np.float32)


@dataclass
class PatchStatistics:
    """Accumulates patch covariances of the layers given, one calibration batch at a time.

    Batches alternate between two halves, so that a refit can be fitted on one half and judged on the
    other (:mod:`hanasc.recovery.reconstruction` chooses its regularisation, or no refit, that way).
    """

    layers: dict[str, tuple[LayerInfo, PatchGeometry]]
    seed: int = 0
    halves: dict[str, tuple[_Moments, _Moments]] = field(default_factory=dict)

    @classmethod
    def for_model(cls, onnx_model, layers: list[LayerInfo]) -> PatchStatistics:
        """Statistics for ``layers`` (those a refit can use: see
        ``refittable_layers``)."""
        nodes = {node.name: node for node in onnx_model.graph.node}
        found = {}
        for layer in layers:
            geometry = PatchGeometry.of(layer, nodes.get(layer.name)) if layer.name in nodes else None
            if geometry is not None:
                found[layer.name] = (layer, geometry)
        return cls(found)

    def add(self, layer_name: str, x: np.ndarray, batch_index: int) -> None:
        """Add the patches of one calibration batch ``x`` (the layer's input tensor)."""
        if layer_name not in self.layers:
            return
        layer, g = self.layers[layer_name]
        x = np.asarray(x, dtype=np.float32)
        if layer.op == "dense":
            patches = x.reshape(-1, x.shape[-1])
            patches = patches[self._sample(len(patches), layer_name, batch_index)]
        elif x.ndim == 4:
            patches = conv_patches(x, g, self._sample(output_positions(x, g), layer_name, batch_index))
        else:
            self.layers.pop(layer_name)
            self.halves.pop(layer_name, None)
            return
        if layer_name not in self.halves:
            self.halves[layer_name] = (_zero_moments(patches), _zero_moments(patches))
        self.halves[layer_name][batch_index % 2].add(patches)

    def _sample(self, total: int, layer_name: str, batch_index: int) -> np.ndarray:
        if total <= POSITIONS_PER_SAMPLE:
            return np.arange(total)
        rng = np.random.default_rng([self.seed, batch_index, len(layer_name)])
        return np.sort(rng.choice(total, POSITIONS_PER_SAMPLE, replace=False))

    def covariances(self) -> dict[str, np.ndarray]:
        """Layer name -> the input patch covariances of the two halves, stacked on a leading axis of 2
        (``(2, D, D)``, or ``(2, C, k, k)`` for a depthwise conv); layers with fewer than 2 batches a half
        get none."""
        return {
            name: np.stack([a.covariance(), b.covariance()])
            for name, (a, b) in self.halves.items()
            if a.count + a.pending_rows > 1 and b.count + b.pending_rows > 1
        }


def _zero_moments(patches: np.ndarray) -> _Moments:
    if patches.ndim == 3:
        c, k, _ = patches.shape
        return _Moments(np.zeros((c, k)), np.zeros((c, k, k)))
    d = patches.shape[1]
    return _Moments(np.zeros(d), np.zeros((d, d)))


def save_covariances(covariances: dict[str, np.ndarray], path: Path) -> None:
    """Write ``covariances`` to an ``.npz`` (atomically)."""
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **{_key(k): v for k, v in covariances.items()}, names=list(covariances))


def load_covariances(path: Path) -> dict[str, np.ndarray]:
    """The covariances saved by :func:`save_covariances` (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = [str(n) for n in archive["names"]]
            return {name: archive[_key(name)] for name in names}
    except (OSError, ValueError, KeyError) as exc:
        raise CalibrationError(f"{path}: cannot read layer statistics ({exc})") from None


def _key(name: str) -> str:
    return "c" + name.encode().hex()


def refittable_layers(func, layers: list[LayerInfo]) -> list[LayerInfo]:
    """The layers a Config can change structurally in a way a refit repairs: k x k kernels (shrink,
    separable) and the consumers of prunable channel groups."""
    consumers = {
        s.param
        for group in channel_groups(func)
        if group.prunable
        for s in group.slices
        if s.role == "consumer"
    }
    return [layer for layer in layers if layer.weight in consumers or max(layer.kernel, default=1) > 1]
