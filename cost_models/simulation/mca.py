"""Cycles of a block of machine code on a CPU's scheduling model (LLVM's ``llvm-mca``), cached on disk.

A block's bytes are disassembled with ``llvm-mc`` (one bracketed instruction a line, so an encoding it
cannot read is dropped alone), and ``llvm-mca`` runs each block as one code region for ``ITERATIONS``
iterations: the cycles of one execution are its steady-state cost (``Total Cycles / Iterations``). Results
are kept in an SQLite file under the hanasc cache, keyed by the code bytes, the llvm-mca version, the
triple, the CPU and its features; a second costing of the same block reads the cache.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir
from hanasc.cost_models.simulation.qemu_blocks import Block

ITERATIONS = 100
BATCH = 400  # blocks per llvm-mca run
FALLBACK_CPI = 1.0  # cycles per instruction of a block llvm-mca cannot cost (counted, and reported)
# x86 REP string instructions: qemu runs one block execution per iteration (per element), and llvm-mca
# prices the instruction as a whole (~100 cycles); an iteration is costed instead at its element's bytes
# over the fast-strings (ERMS) rate below, an assumption about cache-resident copies and fills.
REP_BYTES_PER_CYCLE = 32.0
_REP_STRING = re.compile(r"^rep\w*\s+(movs|stos|cmps|scas|lods)([bwlq])\b")
_ELEMENT_BYTES = {"b": 1, "w": 2, "l": 4, "q": 8}
RULES = f"rep{REP_BYTES_PER_CYCLE:g}"  # the costing rules above, part of every cache key
_REGION = re.compile(r"^\[\d+\] Code Region - b(\d+)$")
_PREFIXES = {"lock", "rep", "repe", "repne", "repz", "repnz", "data16", "notrack", "xacquire", "xrelease"}
_WARNING = re.compile(r"^<stdin>:(\d+):\d+: warning: invalid instruction encoding", re.M)


@dataclass(frozen=True)
class BlockCost:
    cycles: float  # per execution
    insns: int
    unread: int  # instructions llvm-mc or llvm-mca could not use (dropped, or the block's fallback)
    fallback: bool = False  # llvm-mca failed on the block: FALLBACK_CPI per instruction


@dataclass(frozen=True)
class SchedulingModel:
    """An llvm-mca tool and the CPU model it costs blocks on."""

    tool: str  # llvm-mca-19
    triple: str  # aarch64-linux-gnu, x86_64-linux-gnu
    cpu: str  # neoverse-n1, znver4
    mattr: str = ""  # +dotprod,+fullfp16

    @cached_property
    def version(self) -> str:
        tool = _require(self.tool)
        text = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"LLVM version (\S+)", text)
        return match.group(1) if match else "unknown"

    @property
    def disassembler(self) -> str:
        return _require(self.tool.replace("llvm-mca", "llvm-mc"))

    @property
    def description(self) -> str:
        return f"llvm-mca {self.version} -mcpu={self.cpu}"

    def cache_key(self, block: Block) -> str:
        text = f"{block.key}|{self.version}|{self.triple}|{self.cpu}|{self.mattr}|{ITERATIONS}|{RULES}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = tool.split("-")[-1] if tool[-1].isdigit() else "llvm"
        raise HanascError(f"'{tool}' not found on PATH; install it (apt-get install llvm-{package})")
    return path


class CycleCache:
    """Block costs on disk (SQLite), by :meth:`SchedulingModel.cache_key`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache_dir() / "mca-cycles.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cost (key TEXT PRIMARY KEY, cycles REAL, insns INTEGER, "
                "unread INTEGER, fallback INTEGER)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, keys: list[str]) -> dict[str, BlockCost]:
        found: dict[str, BlockCost] = {}
        with closing(self._connect()) as db:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT * FROM cost WHERE key IN ({marks})", chunk).fetchall()
                found.update({k: BlockCost(c, n, u, bool(f)) for k, c, n, u, f in rows})
        return found

    def put(self, costs: dict[str, BlockCost]) -> None:
        rows = [(k, c.cycles, c.insns, c.unread, int(c.fallback)) for k, c in costs.items()]
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO cost VALUES (?, ?, ?, ?, ?)", rows)


def cost_blocks(
    blocks: Iterable[Block], model: SchedulingModel, cache: CycleCache | None = None, workers: int = 2
) -> dict[Block, BlockCost]:
    """The cost of one execution of each block on ``model``: from the cache, else llvm-mca (batches of
    ``BATCH`` blocks, ``workers`` at a time), then cached."""
    cache = cache or CycleCache()
    blocks = [b for b in dict.fromkeys(blocks) if b.insns]
    keys = {b: model.cache_key(b) for b in blocks}
    known = cache.get(sorted(set(keys.values())))
    todo = list({keys[b]: b for b in blocks if keys[b] not in known}.values())
    batches = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for batch, costs in zip(batches, pool.map(lambda b: _cost_batch(b, model), batches), strict=True):
            new = {keys[b]: c for b, c in zip(batch, costs, strict=True)}
            cache.put(new)
            known.update(new)
    return {b: known[keys[b]] for b in blocks}


def _cost_batch(blocks: list[Block], model: SchedulingModel) -> list[BlockCost]:
    """Cost a batch in one llvm-mca run; if the run fails, each block alone (a failing one falls back)."""
    asm = [_disassemble(b, model) for b in blocks] if len(blocks) == 1 else _disassemble_many(blocks, model)
    split = [_split_rep_strings(lines) for lines in asm]
    cycles = _run_mca([lines for lines, _ in split], model)
    if cycles is None and len(blocks) > 1:
        return [c for b in blocks for c in _cost_batch([b], model)]
    out = []
    for i, (block, (lines, rep_cycles)) in enumerate(zip(blocks, split, strict=True)):
        n = len(block.insns)
        mca_failed = bool(lines) and (cycles is None or i not in cycles)
        if mca_failed or not (lines or rep_cycles):
            out.append(BlockCost(FALLBACK_CPI * n, n, n, True))
        else:
            read = len(lines) + sum(1 for line in asm[i] if _REP_STRING.match(line))
            out.append(BlockCost((cycles or {}).get(i, 0.0) + rep_cycles, n, n - read))
    return out


def _split_rep_strings(lines: list[str]) -> tuple[list[str], float]:
    """A block's instructions without its REP string instructions, and the cycles of one iteration of
    each (``REP_BYTES_PER_CYCLE``)."""
    kept, rep_cycles = [], 0.0
    for line in lines:
        m = _REP_STRING.match(line)
        if m:
            rep_cycles += _ELEMENT_BYTES[m.group(2)] / REP_BYTES_PER_CYCLE
        else:
            kept.append(line)
    return kept, rep_cycles


def _disassemble(block: Block, model: SchedulingModel) -> list[str]:
    return _disassemble_many([block], model)[0]


def _disassemble_many(blocks: list[Block], model: SchedulingModel) -> list[list[str]]:
    """Each block's instructions as assembly text (instructions llvm-mc cannot decode are left out)."""
    owners = [i for i, b in enumerate(blocks) for _ in b.insns]
    text = "".join("[" + " ".join(f"0x{x:02x}" for x in insn) + "]\n" for b in blocks for insn in b.insns)
    cmd = [model.disassembler, "--disassemble", f"-triple={model.triple}", f"-mcpu={model.cpu}"]
    if model.mattr:
        cmd.append(f"-mattr={model.mattr}")
    done = subprocess.run(cmd, input=text, capture_output=True, text=True)
    unread = {int(n) - 1 for n in _WARNING.findall(done.stderr)}
    decoded = _instructions(done.stdout)
    readable = [line for line in range(len(owners)) if line not in unread]
    if len(decoded) != len(readable):  # should not happen; keep block boundaries honest
        raise HanascError(f"llvm-mc decoded {len(decoded)} of {len(readable)} instructions")
    asm: list[list[str]] = [[] for _ in blocks]
    for line, insn in zip(readable, decoded, strict=True):
        asm[owners[line]].append(insn)
    return asm


def _instructions(listing: str) -> list[str]:
    """llvm-mc's listing, one instruction a line (an x86 prefix it prints alone joins the next line)."""
    out: list[str] = []
    prefix = ""
    for line in (ln.strip() for ln in listing.splitlines()):
        if not line or line == ".text":
            continue
        if line in _PREFIXES:
            prefix = f"{prefix}{line} "
            continue
        out.append(prefix + line)
        prefix = ""
    return out


def _run_mca(asm: list[list[str]], model: SchedulingModel) -> dict[int, float] | None:
    """Cycles per iteration of each region (block index -> cycles), or None when llvm-mca fails."""
    parts = []
    for i, lines in enumerate(asm):
        if lines:
            parts += [f"# LLVM-MCA-BEGIN b{i}", *lines, f"# LLVM-MCA-END b{i}"]
    if not parts:
        return {}
    cmd = [
        _require(model.tool),
        f"-mtriple={model.triple}",
        f"-mcpu={model.cpu}",
        f"-iterations={ITERATIONS}",
    ]
    cmd += ["--instruction-info=false", "--resource-pressure=false", "-skip-unsupported-instructions=any"]
    if model.mattr:
        cmd.append(f"-mattr={model.mattr}")
    done = subprocess.run(cmd, input="\n".join(parts) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        return None
    cycles: dict[int, float] = {}
    region = None
    for line in done.stdout.splitlines():
        if m := _REGION.match(line.strip()):
            region = int(m.group(1))
        elif line.startswith("Total Cycles:") and region is not None:
            cycles[region] = float(line.split(":")[1]) / ITERATIONS
    return cycles
