"""A VPU bundle's checks and golden outputs: what :func:`hanasc.targets.vpu.build_bundle` runs before it
writes a bundle, what ``golden.npz`` holds (OpenVINO's CPU plugin on a seeded probe input, with the
tolerances a device run is held to), and :func:`verify_bundle`, which re-runs every check on a written
bundle and compares its files with the manifest's checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError
from hanasc.targets import vpu_checks
from hanasc.targets.registry import get_target
from hanasc.targets.vpu_plan import VpuGeneration

MANIFEST = "vpu_manifest.json"
GOLDEN = "golden.npz"
PROBE_SEED = (
    20240  # the golden probe input: np.random.default_rng(PROBE_SEED).standard_normal(shape), float32
)
COMPARE_INPUTS = 4  # seeded inputs for the CPU-plugin vs onnxruntime check
# Golden tolerances for the device run (FP16 activations on the device; thresholds chosen, not measured).
DEVICE_TOLERANCES = {
    "fp16": {"min_cosine": 0.999, "max_rel_err": 2e-2},
    "quantized": {"min_cosine": 0.98, "max_rel_err": 1e-1},
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _seeded_feeds(name: str, shape: tuple[int, ...], seeds: list[int]) -> list[dict[str, np.ndarray]]:
    return [{name: np.random.default_rng(s).standard_normal(shape).astype(np.float32)} for s in seeds]


def run_checks(
    target: VpuGeneration,
    folder: Path,
    plan: dict[str, str],
    input_name: str,
    shape: tuple[int, ...],
    quantized: bool,
    nodes: dict[str, str] | None = None,
) -> list[vpu_checks.CheckReport]:
    """Static shapes, supported ops, precision audit and CPU-plugin vs onnxruntime on a bundle folder
    (``nodes``: each layer's compute node in the IR, as the manifest's ``layer_nodes`` keeps them)."""
    import openvino as ov

    ir = ov.Core().read_model(str(folder / "model.xml"))
    feeds = _seeded_feeds(input_name, shape, list(range(PROBE_SEED + 1, PROBE_SEED + 1 + COMPARE_INPUTS)))
    return [
        vpu_checks.check_static_shapes(ir),
        vpu_checks.check_supported_ops(ir, target.ops_key),
        vpu_checks.audit_precisions(ir, plan, nodes),
        vpu_checks.compare_cpu_with_onnxruntime(
            folder / "model.xml", folder / "model.onnx", feeds, quantized
        ),
    ]


def write_golden(folder: Path, input_name: str, shape: tuple[int, ...], quantized: bool) -> dict:
    """Golden outputs: the IR on OpenVINO's CPU plugin (FP32 execution) for the seeded probe input."""
    feed = _seeded_feeds(input_name, shape, [PROBE_SEED])[0]
    outputs = vpu_checks.run_openvino_cpu(folder / "model.xml", [feed])[0]
    arrays = {f"input:{input_name}": feed[input_name]}
    arrays.update({f"output:{i}": y for i, y in enumerate(outputs)})
    np.savez(folder / GOLDEN, **arrays)
    return {
        "file": GOLDEN,
        "probe": {
            "input": input_name,
            "shape": list(shape),
            "dtype": "float32",
            "seed": PROBE_SEED,
            "recipe": "numpy.random.default_rng(seed).standard_normal(shape).astype(float32)",
        },
        "produced_by": "OpenVINO CPU plugin on model.xml, INFERENCE_PRECISION_HINT=f32",
        "outputs": [
            {
                "index": i,
                "shape": list(y.shape),
                "values": y.ravel().tolist() if y.size <= 4096 else None,
                "sha256_f32": hashlib.sha256(np.ascontiguousarray(y, np.float32).tobytes()).hexdigest(),
            }
            for i, y in enumerate(outputs)
        ],
        "tolerances": {
            **DEVICE_TOLERANCES["quantized" if quantized else "fp16"],
            "metric": "cosine similarity and max |device - golden| / max |golden| per output",
            "provenance": "chosen by hanasc for FP16 device arithmetic; not measured on a device",
        },
    }


def verify_bundle(folder: Path) -> list[vpu_checks.CheckReport]:
    """Re-run every check on a written bundle (reads the manifest's generation and plan)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise HanascError(f"{folder}: not a VPU bundle (no {MANIFEST})") from None
    target = get_target(manifest["generation"])
    plan = manifest["precision_plan"]
    probe = manifest["golden"]["probe"]
    quantized = any(p != "fp16" for p in plan.values())
    nodes = manifest.get("layer_nodes")
    checks = run_checks(target, folder, plan, probe["input"], tuple(probe["shape"]), quantized, nodes)
    bad = [name for name, entry in manifest["files"].items() if sha256_of(folder / name) != entry["sha256"]]
    checks.append(
        vpu_checks.CheckReport(
            "checksums",
            not bad,
            "all files match" if not bad else f"changed: {', '.join(bad)}",
            {"changed": bad},
        )
    )
    return checks
