"""What every target's bundle shares: the build report, the manifest, probe input/output files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError

MANIFEST = "bundle.json"
PROBE_INPUT = "probe_input.bin"  # several inputs: probe_input_1.bin, ...
PROBE_OUTPUT = "probe_output.bin"


@dataclass
class TensorSpec:
    """Shape and dtype of one tensor, and the file holding it in the bundle (raw, C order)."""

    shape: tuple[int, ...]
    dtype: str
    file: str | None = None

    @property
    def shape_arg(self) -> str:
        """The shape as the runner takes it: ``1x3x224x224``."""
        return "x".join(str(d) for d in self.shape)


@dataclass
class BundleReport:
    """What ``build_bundle`` made: the files (bytes each), timings, offline checks and notes."""

    target: str
    out_dir: Path
    files: dict[str, int]
    build_seconds: float
    checks: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["total_bytes"] = self.total_bytes
        return data


def as_list(inputs: list[np.ndarray] | dict[str, np.ndarray]) -> list[np.ndarray]:
    """Probe inputs in ``main``'s order (a dict from ``LoadedModel.example_inputs()`` keeps that order)."""
    return list(inputs.values()) if isinstance(inputs, dict) else list(inputs)


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def write_probe(folder: Path, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Write the probe inputs (float32) and the reference outputs; return their manifest entries."""
    in_specs = []
    for i, x in enumerate(inputs):
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise HanascError(f"probe input {i} is {x.dtype}; bundle runners take float32 inputs only")
        name = PROBE_INPUT if i == 0 else f"probe_input_{i}.bin"
        np.ascontiguousarray(x).tofile(folder / name)
        in_specs.append(TensorSpec(tuple(int(d) for d in x.shape), "float32", name))
    np.concatenate([np.ascontiguousarray(y).reshape(-1).view(np.uint8) for y in outputs]).tofile(
        folder / PROBE_OUTPUT
    )
    out_specs = [TensorSpec(tuple(int(d) for d in y.shape), str(y.dtype)) for y in outputs]
    return {
        "inputs": [asdict(s) for s in in_specs],
        "outputs": [asdict(s) for s in out_specs],
        "probe_output": PROBE_OUTPUT,
    }


def write_manifest(folder: Path, data: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HanascError(f"{folder}: not a hanasc bundle (no {MANIFEST})") from None


def tensor_specs(entries: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(tuple(e["shape"]), e["dtype"], e.get("file")) for e in entries]


def split_outputs(raw: bytes, specs: list[TensorSpec]) -> list[np.ndarray]:
    """Cut the runner's output file (outputs back to back, raw) into arrays."""
    arrays, offset = [], 0
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        count = int(np.prod(spec.shape, dtype=np.int64))
        size = count * dtype.itemsize
        if offset + size > len(raw):
            raise HanascError(f"runner output is {len(raw)} bytes; expected at least {offset + size}")
        arrays.append(np.frombuffer(raw, dtype, count, offset).reshape(spec.shape).copy())
        offset += size
    return arrays


def probe_reference(folder: Path) -> list[np.ndarray]:
    """The host reference outputs stored in a bundle."""
    manifest = read_manifest(folder)
    return split_outputs((Path(folder) / PROBE_OUTPUT).read_bytes(), tensor_specs(manifest["outputs"]))


def max_abs_diff(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    if len(outputs) != len(reference):
        raise HanascError(f"{len(outputs)} outputs, reference has {len(reference)}")
    return max(
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        for a, b in zip(outputs, reference, strict=True)
    )
