"""The runtimes a user may already run, as yardsticks: the original ONNX model under onnxruntime and
OpenVINO, each in fp32 and int8, calibrated on the samples hanasc calibrates on.

- onnxruntime fp32; onnxruntime int8: ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations,
  MinMax calibration);
- OpenVINO CPU fp32; OpenVINO CPU int8: ``nncf.quantize`` (default preset). Both run with
  ``INFERENCE_PRECISION_HINT=f32``: on a CPU with bf16 (AVX512_BF16, AMX) OpenVINO's default runs fp32
  layers in bf16, which is neither row's precision.

Each engine runs with the thread count it is given (the compile passes TVM's own). The engines' imports
stay inside the functions (heavy); :func:`parse_compare` checks names against what is installed without
importing anything. Used by the compile's comparison (:mod:`hanasc.compile.compare`) and the bench scripts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError

ENGINES = ("onnxruntime", "openvino")
LABELS = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO"}
_MODULES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino", "nncf")}
CALIBRATION_LIMIT = 300  # samples each quantizer calibrates on at most (nncf's default subset size)

Feeds = list[np.ndarray]  # one inference's inputs, in the model's input order, batch 1


def missing_modules(engine: str) -> list[str]:
    """The Python modules ``engine`` needs that cannot be imported here (found without importing)."""
    missing = []
    for name in _MODULES[engine]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent that fails, or a module set to None in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def parse_compare(text: str | None) -> tuple[str, ...] | None:
    """``--compare``: None (not given: every engine where the result runs here), ``()`` for ``none``, else
    the engines named, each known and installed (a one-line :class:`HanascError` names the first that is
    not)."""
    if text is None:
        return None
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    if not names:
        raise HanascError(f"--compare '{text}': name engines ({', '.join(ENGINES)}) or none")
    for name in names:
        if name not in ENGINES:
            raise HanascError(f"--compare {name}: unknown engine; choose from {', '.join(ENGINES)}, or none")
        missing = missing_modules(name)
        if missing:
            raise HanascError(
                f"--compare {name}: not installed here (cannot import {', '.join(missing)}); "
                f"pip install {' '.join(missing)}, or leave {name} out"
            )
    return tuple(dict.fromkeys(names))


def call_timer(call: Callable[[], object]) -> Callable[[], float]:
    """A timer of one ``call()`` in milliseconds of wall time (for :func:`hanasc.cost_models.timing.
    round_robin`)."""

    def timer() -> float:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e3

    return timer


@dataclass
class Peer:
    """One engine at one precision, ready to run: ``infer`` returns the first output of one inference."""

    engine: str  # a key of ENGINES
    precision: str  # "fp32" or "int8"
    how: str
    infer: Callable[[Feeds], np.ndarray]

    @property
    def name(self) -> str:
        return f"{LABELS[self.engine]} {self.precision}"

    def timer(self, feeds: Feeds, warmup: int = 3) -> Callable[[], float]:
        """A timer of one inference on ``feeds``, after ``warmup`` untimed runs."""
        for _ in range(warmup):
            self.infer(feeds)
        return call_timer(lambda: self.infer(feeds))

    def outputs(self, samples: np.ndarray) -> np.ndarray:
        """The first output for each sample of a one-input model, concatenated (batch 1 inferences)."""
        return np.concatenate([self.infer([s[None]]) for s in samples])


@dataclass
class PeerFailure:
    """An engine at a precision that could not take the model: why, in one line."""

    engine: str
    precision: str
    reason: str

    @property
    def name(self) -> str:
        return f"{LABELS[self.engine]} {self.precision}"


def one_line(exc: BaseException) -> str:
    """An engine's exception in one line: its last meaningful line (OpenVINO puts the op names last)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    return f"{type(exc).__name__}: {(lines[-1] if lines else '')[:200]}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The quantizers' chatter kept off the user's screen: log records up to WARNING (onnxruntime's advice
    on pre-processing, NNCF's notes) and what they print to stdout (NNCF's progress bars)."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(before)


def peers_of(
    engine: str,
    path: Path,
    calibration: Sequence[Feeds],
    threads: int,
    work: Path,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> list[Peer | PeerFailure]:
    """``engine``'s fp32 and int8 peers of the ONNX model at ``path``; a precision the engine cannot run
    the model at is a :class:`PeerFailure` (int8 failing leaves fp32 standing). ``calibration``: the
    quantizer's samples (at most :data:`CALIBRATION_LIMIT` used); ``work``: a folder for the quantized
    file; ``shapes``: static input shapes by name (OpenVINO reshapes a dynamic model to them)."""
    calibration = list(calibration)[:CALIBRATION_LIMIT]
    build = _onnxruntime_peers if engine == "onnxruntime" else _openvino_peers
    missing = missing_modules(engine)
    if missing:
        why = f"not installed (cannot import {', '.join(missing)})"
        return [PeerFailure(engine, p, why) for p in ("fp32", "int8")]
    return build(path, calibration, threads, work, shapes or {})


def _onnxruntime_peers(path: Path, calibration, threads: int, work: Path, shapes) -> list:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    def session(p: Path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return sess, names

    class Reader(CalibrationDataReader):
        def __init__(self, names: list[str]) -> None:
            self.items = iter([dict(zip(names, feeds, strict=True)) for feeds in calibration])

        def get_next(self):
            return next(self.items, None)

    def peer(precision: str, p: Path, how: str) -> Peer:
        sess, names = session(p)
        return Peer(
            "onnxruntime", precision, how, lambda f: sess.run(None, dict(zip(names, f, strict=True)))[0]
        )

    try:
        fp32 = peer("fp32", path, "InferenceSession on the original ONNX (CPUExecutionProvider)")
    except Exception as exc:  # an engine that cannot take the model is a row saying so
        return [PeerFailure("onnxruntime", p, one_line(exc)) for p in ("fp32", "int8")]
    try:
        int8_path = work / f"{path.stem}.ort_int8.onnx"
        with quiet():
            quantize_static(
                str(opset_at_least(path, 13, work)), str(int8_path), Reader(session(path)[1]),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )  # fmt: skip
        how = (
            f"quantize_static: QDQ, per-channel s8 weights, u8 activations, MinMax on {len(calibration)} "
            "calibration samples"
        )
        return [fp32, peer("int8", int8_path, how)]
    except Exception as exc:
        return [fp32, PeerFailure("onnxruntime", "int8", one_line(exc))]


def opset_at_least(path: Path, opset: int, work: Path) -> Path:
    """``path``, or a copy converted to ``opset`` in ``work`` when its default-domain opset is older
    (per-channel QDQ needs DequantizeLinear's ``axis``, opset 13)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset) >= opset:
        return path
    converted = work / f"{path.stem}.opset{opset}.onnx"
    onnx.save(version_converter.convert_version(model, opset), str(converted))
    return converted


def _openvino_peers(path: Path, calibration, threads: int, work: Path, shapes) -> list:
    import nncf
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }

    def peer(precision: str, model, how: str) -> Peer:
        request = core.compile_model(model, "CPU", config).create_infer_request()
        return Peer("openvino", precision, how, lambda f: request.infer(list(f))[0])

    try:
        model = ov.convert_model(str(path))
        if shapes and not all(i.get_partial_shape().is_static for i in model.inputs):
            model.reshape({i.get_any_name(): shapes[i.get_any_name()] for i in model.inputs})
        fp32 = peer("fp32", model, "ov.convert_model of the original ONNX, CPU plugin, f32 inference")
    except Exception as exc:
        return [PeerFailure("openvino", p, one_line(exc)) for p in ("fp32", "int8")]
    try:
        with quiet():
            quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
        how = f"nncf.quantize (default preset) on {len(calibration)} calibration samples, CPU plugin"
        return [fp32, peer("int8", quantized, how)]
    except Exception as exc:
        return [fp32, PeerFailure("openvino", "int8", one_line(exc))]
