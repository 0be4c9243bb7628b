"""The simulated latency (hanasc simulate): qemu block counts, llvm-mca costs and their cache, kernels."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from hanasc.cost_models.simulation import mca, qemu_blocks, symbols
from hanasc.cost_models.simulation.cores import core_for
from hanasc.cost_models.simulation.simulate import simulate_bundle

LOOP_C = """
#include <stdlib.h>
volatile long sink;
__attribute__((noinline)) void work(long n) { for (long i = 0; i < n; i++) sink += i * 3; }
int main(int argc, char **argv) { work(atol(argv[1])); return 0; }
"""
A78_MODEL = mca.SchedulingModel("llvm-mca-19", "aarch64-linux-gnu", "neoverse-n1", "+neon,+dotprod")

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "llvm-mca-19", "cc")),
    reason="aarch64 cross compiler, qemu-user, llvm-19 and a host C compiler are needed",
)


@pytest.fixture(scope="module")
def loop_program(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loop")
    (folder / "loop.c").write_text(LOOP_C)
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-O1", "-static", "-o", "loop", "loop.c"], cwd=folder, check=True
    )
    return folder / "loop"


def _work_executions(program: Path, n: int) -> tuple[dict, int]:
    """Block counts of a run with loop count ``n``, and the most-executed instruction of ``work``."""
    counts = qemu_blocks.count_blocks(["qemu-aarch64"], [str(program), str(n)], program.parent)
    table = symbols.SymbolTable.read(program, symbols.nm_tool("aarch64-linux-gnu"))
    in_work = [b for b in counts if b.file == str(program) and table.function_at(b.offset) == "work"]
    offsets = {b.offset + 4 * i for b in in_work for i in range(len(b.insns))}
    return counts, max(qemu_blocks.executions_at(counts, str(program), o) for o in offsets)


@needs_tools
@pytest.mark.parametrize("n", [1, 37, 1000])
def test_block_counts_are_exact(loop_program, n):
    """The loop body of ``work(n)`` executes exactly n times (every instruction of it, whichever blocks
    qemu cut it into), the function's entry once."""
    counts, most = _work_executions(loop_program, n)
    assert most == n
    table = symbols.SymbolTable.read(loop_program, symbols.nm_tool("aarch64-linux-gnu"))
    entry = table.address_of("work")
    assert qemu_blocks.executions_at(counts, str(loop_program), entry) == 1


@needs_tools
def test_one_more_call_is_the_difference(loop_program):
    fewer = qemu_blocks.count_blocks(["qemu-aarch64"], [str(loop_program), "10"], loop_program.parent)
    more = qemu_blocks.count_blocks(["qemu-aarch64"], [str(loop_program), "30"], loop_program.parent)
    extra = qemu_blocks.per_call(fewer, more)
    assert extra and all(n > 0 for n in extra.values())
    assert sum(extra.values()) < sum(more.values())


@needs_tools
def test_mca_costs_are_cached_and_deterministic(loop_program, tmp_path, monkeypatch):
    counts, _ = _work_executions(loop_program, 100)
    cache = mca.CycleCache(tmp_path / "cycles.sqlite")
    first = mca.cost_blocks(counts, A78_MODEL, cache)
    assert first and all(c.cycles > 0 for c in first.values())
    assert not any(c.fallback for c in first.values())

    def no_mca(*_args):
        raise AssertionError("llvm-mca ran although every block is cached")

    monkeypatch.setattr(mca, "_run_mca", no_mca)
    second = mca.cost_blocks(counts, A78_MODEL, mca.CycleCache(tmp_path / "cycles.sqlite"))
    assert second == first


@needs_tools
def test_a_bigger_block_costs_more(tmp_path):
    """llvm-mca on the N1 model: four independent FMLAs take longer than one, a dependent chain longer
    still."""
    fmla = bytes.fromhex("20cc224e")  # fmla v0.4s, v1.4s, v2.4s
    one = qemu_blocks.Block("x", 0, (fmla,))
    four = qemu_blocks.Block("x", 4, (fmla,) * 4)
    costs = mca.cost_blocks([one, four], A78_MODEL, mca.CycleCache(tmp_path / "c.sqlite"))
    assert costs[four].cycles > costs[one].cycles


@needs_tools
def test_rep_string_iterations_cost_their_bytes(tmp_path):
    """qemu runs an x86 REP string instruction as one block execution per element: each costs the
    element's bytes at the fast-strings rate, not llvm-mca's price of the whole instruction."""
    x86 = mca.SchedulingModel("llvm-mca-19", "x86_64-linux-gnu", "znver4")
    movsb = qemu_blocks.Block("x", 0, (bytes.fromhex("f3a4"),))  # rep movsb
    stosq = qemu_blocks.Block("x", 2, (bytes.fromhex("f348ab"),))  # rep stosq
    costs = mca.cost_blocks([movsb, stosq], x86, mca.CycleCache(tmp_path / "c.sqlite"))
    assert costs[movsb].cycles == pytest.approx(1 / mca.REP_BYTES_PER_CYCLE)
    assert costs[stosq].cycles == pytest.approx(8 / mca.REP_BYTES_PER_CYCLE)
    assert not costs[movsb].fallback and costs[movsb].unread == 0


def test_not_an_arm_target_is_refused():
    from hanasc.core.errors import HanascError

    with pytest.raises(HanascError, match="cannot be simulated"):
        core_for("host")


def test_cli_bad_input(tmp_path):
    missing = run_cli("simulate", str(tmp_path / "nope"), "--target", "cortex-a78")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    not_bundle = run_cli("simulate", str(empty), "--target", "cortex-a78")
    assert not_bundle.returncode == 2 and "neither a bundle" in not_bundle.stderr
    for target in ("host", "vpu"):
        done = run_cli("simulate", str(empty), "--target", target)
        assert done.returncode == 2 and "cannot be simulated" in done.stderr
        assert done.stderr.strip().count("\n") == 0


def _conv_bundle(folder: Path, out_channels: int) -> Path:
    """A one-conv model (3x3, 32 input channels, 16x16, fp32) as the cortex-a78 bundle ships it."""
    import tvm
    from tvm import relax

    from hanasc.targets import cortex_a78

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((out_channels, 32, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(tvm.runtime.tensor(weight)), padding=1))
        bb.emit_func_output(y)
    out = folder / f"conv{out_channels}"
    probe = [rng.standard_normal((1, 32, 16, 16)).astype("float32")]
    cortex_a78.build_bundle(bb.get(), out, probe)
    return out


@needs_tools
@pytest.mark.slow
def test_simulated_kernel_time_scales_with_its_work(tmp_path):
    """Twice the output channels (2x MACs) of a conv: 1.8-2.2x its simulated cycles."""
    core = core_for("cortex-a78")
    cycles = []
    for channels in (32, 64):
        sim = simulate_bundle(_conv_bundle(tmp_path, channels), core)
        conv = max((k for k in sim.kernels if "conv2d" in k.name), key=lambda k: k.cycles)
        cycles.append(conv.cycles)
    assert 1.8 <= cycles[1] / cycles[0] <= 2.2, cycles


@needs_tools
@pytest.mark.slow
def test_cli_simulate_json(test_models):
    done = run_cli("simulate", str(test_models["inverted_residual"]), "--target", "cortex-a78", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"total_ms", "cycles", "clock_ghz", "kernels", "provenance"} <= set(data)
    assert data["provenance"].startswith("simulated (qemu block counts x llvm-mca")
    assert data["clock_ghz"] == 2.4
    assert data["total_ms"] == pytest.approx(data["cycles"] / 2.4e6, rel=1e-3)
    names = {k["name"] for k in data["kernels"]}
    assert any(n.startswith("fused_conv2d") for n in names)
    assert sum(k["cycles"] for k in data["kernels"]) == pytest.approx(data["cycles"], rel=1e-3)
    assert "memory" in data and data["memory"]["provenance"].startswith("prior (roofline")
