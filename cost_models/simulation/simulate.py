"""Simulate one inference of a model library: count its blocks under qemu, cost them with llvm-mca,
attribute them to kernels through the library's symbols.

One inference is the difference of two runs of the bundle runner, one calling ``main`` once more than the
other (the runner always calls it once before its timed runs): loading, the first call's allocations and
the exit fall out, a steady-state call remains.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from hanasc.core.errors import HanascError
from hanasc.cost_models.simulation import mca, qemu_blocks, symbols
from hanasc.cost_models.simulation.cores import SimCore
from hanasc.cost_models.simulation.host_runner import build_host_runner
from hanasc.cost_models.simulation.report import KernelCycles, Simulation
from hanasc.targets import bundle

THREADS = {"TVM_NUM_THREADS": "1"}  # one core: the simulation costs one instruction stream


def runner_argv(runner: Path, library: Path, inputs: list[bundle.TensorSpec], warmup: int) -> list[str]:
    """The bundle runner's command line: ``main`` runs ``2 + warmup`` times (``--runs 1``)."""
    argv = [str(runner), str(library), "--runs", "1", "--warmup", str(warmup)]
    for spec in inputs:
        argv += ["--input", f"{spec.file}:{spec.shape_arg}"]
    return argv


def count_one_call(
    core: SimCore, argv: Callable[[int], list[str]], cwd: Path
) -> dict[qemu_blocks.Block, int]:
    """The block executions of one steady-state call: ``argv(1)`` minus ``argv(0)``."""
    fewer = qemu_blocks.count_blocks(core.qemu, argv(0), cwd, THREADS)
    more = qemu_blocks.count_blocks(core.qemu, argv(1), cwd, THREADS)
    return qemu_blocks.per_call(fewer, more)


def simulate_library(
    core: SimCore,
    library: Path,
    argv: Callable[[int], list[str]],
    cwd: Path,
    cache: mca.CycleCache | None = None,
) -> Simulation:
    """Simulate one call of ``library``'s ``main`` run by ``argv`` (see :func:`runner_argv`)."""
    library = Path(library).resolve()
    counts = count_one_call(core, argv, cwd)
    costs = mca.cost_blocks(counts, core.model, cache)
    table = symbols.SymbolTable.read(library, symbols.nm_tool(core.model.triple))
    cycles: dict[str, float] = defaultdict(float)
    fallback, instructions = 0.0, 0
    for block, n in counts.items():
        cost = costs.get(block)
        if cost is None:
            continue
        cycles[_owner(block, library, table)] += cost.cycles * n
        fallback += cost.cycles * n if cost.fallback else 0.0
        instructions += len(block.insns) * n
    kernels = [KernelCycles(name, c) for name, c in sorted(cycles.items(), key=lambda kv: -kv[1])]
    return Simulation(core, kernels, len(counts), instructions, fallback)


def _owner(block: qemu_blocks.Block, library: Path, table: symbols.SymbolTable) -> str:
    """The kernel a block belongs to (a function of the model library), or the library outside it that
    holds it, in parentheses (TVM's runtime, libc, the runner)."""
    if Path(block.file) != library:
        return f"({Path(block.file).name})"
    function = table.function_at(block.offset)
    return symbols.kernel_name(function) if function else f"({library.name})"


def simulate_bundle(bundle_dir: Path, core: SimCore, cache: mca.CycleCache | None = None) -> Simulation:
    """Simulate a bundle: an aarch64 one with its own runner, a host one (``model.so``) with the runner
    built for this machine, on the bundle's probe input."""
    bundle_dir = Path(bundle_dir).resolve()
    manifest = bundle.read_manifest(bundle_dir)
    if manifest.get("target") != core.target:
        raise HanascError(
            f"{bundle_dir}: a bundle for '{manifest.get('target')}', not --target {core.target}"
        )
    inputs = bundle.tensor_specs(manifest["inputs"])
    runner = bundle_dir / "runner" if core.bundle_runner else build_host_runner()
    library = bundle_dir / "model.so"
    for needed in (runner, library):
        if not needed.is_file():
            raise HanascError(f"{bundle_dir}: the bundle has no {needed.name}")
    return simulate_library(
        core, library, lambda w: runner_argv(runner, library, inputs, w), bundle_dir, cache
    )
