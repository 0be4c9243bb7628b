"""Execution counts of translation blocks: a program run under qemu-user with hanasc's block-counter plugin.

The plugin (``block_counter.c``, built here once with the host C compiler and cached) adds an inline
counter to every translated block, so counting costs almost nothing (no ``-d exec`` trace text: a real
model's 1e8 block executions would be gigabytes of it). At exit it writes each block's guest address, the
host address of its code, its executions and its instruction bytes, and the mappings its code lay in; a
block is then named by the file and file offset of its first instruction.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir

PLUGIN_SOURCE = Path(__file__).with_name("block_counter.c")
ANONYMOUS = "[anonymous]"


@dataclass(frozen=True)
class Block:
    """One translated block: where its code lies (file, offset of its first instruction in the file) and
    its instructions (bytes of each)."""

    file: str
    offset: int
    insns: tuple[bytes, ...]

    @property
    def key(self) -> str:
        """A content id of the code (what a scheduling model's cost depends on)."""
        return hashlib.sha256(b"".join(self.insns)).hexdigest()[:32]

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.insns)


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    offset: int
    path: str


def build_plugin() -> Path:
    """The block-counter plugin (host shared object), compiled once per source version."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise HanascError("no host C compiler (cc) to build the qemu block counter; apt-get install gcc")
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:16]
    path = cache_dir() / "qemu-block-counter" / digest / "block_counter.so"
    if path.is_file():
        return path
    with atomic_file(path) as tmp:
        cmd = [cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", str(PLUGIN_SOURCE), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HanascError(f"building the qemu block counter failed: {done.stderr.strip()[-300:]}")
    return path


def count_blocks(
    qemu: Sequence[str],
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[Block, int]:
    """Run ``argv`` under ``qemu`` (e.g. ``["qemu-aarch64", "-L", sysroot]``) with the block counter;
    return each executed block's executions. ``env``: extra environment variables of the program."""
    plugin = build_plugin()
    with tempfile.TemporaryDirectory(prefix="hanasc-blocks-") as scratch:
        out = Path(scratch) / "blocks.txt"
        cmd = [*qemu, "-plugin", f"{plugin},out={out}", *argv]
        done = subprocess.run(
            cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip())[-300:]
            raise HanascError(f"{Path(argv[0]).name} under {Path(qemu[0]).name} failed: {detail}")
        if not out.is_file():
            raise HanascError(f"{Path(qemu[0]).name} wrote no block counts (does it support -plugin?)")
        return parse_counts(out.read_text())


def parse_counts(text: str) -> dict[Block, int]:
    """The plugin's output (``B vaddr haddr count hex,hex,...`` lines, then ``M`` mapping lines) as counts
    per block; blocks translated more than once (same code, same place) are summed."""
    lines = text.splitlines()
    if not lines or lines[-1] != "END":
        raise HanascError("the block counter's output is incomplete (the program did not exit normally)")
    regions = [_region(ln[2:]) for ln in lines if ln.startswith("M ")]
    counts: dict[Block, int] = {}
    for line in lines:
        if not line.startswith("B "):
            continue
        _, _vaddr, haddr, count, code = line.split(" ", 4)
        block = _block(int(haddr, 16), code, regions)
        counts[block] = counts.get(block, 0) + int(count)
    return counts


def _region(line: str) -> Region:
    fields = line.split(maxsplit=5)
    start, end = (int(x, 16) for x in fields[0].split("-"))
    path = fields[5].strip() if len(fields) > 5 else ANONYMOUS
    return Region(start, end, int(fields[2], 16), path)


def _block(haddr: int, code: str, regions: list[Region]) -> Block:
    insns = tuple(bytes.fromhex(h) for h in code.split(",")) if code else ()
    region = next((r for r in regions if r.start <= haddr < r.end), None)
    if region is None:
        return Block(ANONYMOUS, haddr, insns)
    return Block(region.path, haddr - region.start + region.offset, insns)


def per_call(fewer: dict[Block, int], more: dict[Block, int]) -> dict[Block, int]:
    """The executions of one extra call: ``more`` (a run with one more call) minus ``fewer``, per block;
    blocks that ran no more often are dropped."""
    return {b: n - fewer.get(b, 0) for b, n in more.items() if n > fewer.get(b, 0)}


def executions_at(counts: dict[Block, int], file: str, offset: int) -> int:
    """How many times the instruction at ``offset`` of ``file`` executed: the executions of every block
    whose code covers it."""
    total = 0
    for block, n in counts.items():
        if block.file == file and block.offset <= offset < block.offset + block.size:
            total += n
    return total
