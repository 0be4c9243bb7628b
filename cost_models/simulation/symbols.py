"""Which function a block of code belongs to: an ELF file's loadable segments and symbols (``nm``)."""

from __future__ import annotations

import bisect
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.errors import HanascError

PT_LOAD = 1
TVM_EXPORT_PREFIX = "__tvm_ffi_"  # TVM's exported wrapper of a PrimFunc
TVM_LAMBDA_SUFFIX = "_compute_"  # the body TVM outlines for a kernel's parallel loop


@dataclass(frozen=True)
class Segment:
    offset: int
    vaddr: int
    size: int


def load_segments(path: Path) -> list[Segment]:
    """The PT_LOAD segments of a 64-bit little-endian ELF file."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise HanascError(f"{path}: not a 64-bit little-endian ELF file")
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)
    segments = []
    for i in range(phnum):
        kind, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if kind == PT_LOAD:
            segments.append(Segment(offset, vaddr, filesz))
    return segments


def offset_to_vaddr(segments: list[Segment], offset: int) -> int | None:
    """The link-time address of a file offset (None outside every loadable segment)."""
    for s in segments:
        if s.offset <= offset < s.offset + s.size:
            return s.vaddr + offset - s.offset
    return None


def nm_tool(triple: str) -> str:
    """``aarch64-linux-gnu-nm`` for aarch64 files, ``nm`` for the host's."""
    name = "nm" if triple.startswith("x86_64") else f"{triple.split('-')[0]}-linux-gnu-nm"
    path = shutil.which(name) or shutil.which("llvm-nm-19") or shutil.which("llvm-nm")
    if path is None:
        raise HanascError(f"'{name}' not found on PATH; install binutils for {triple}")
    return path


@dataclass
class SymbolTable:
    """The functions of one ELF file, by link-time address. Code without a symbol of its own belongs to
    the function before it: LLVM emits a kernel's private parallel body (no symbol) right after it."""

    path: Path
    segments: list[Segment]
    starts: list[int]
    names: list[str]

    @classmethod
    def read(cls, path: Path, nm: str) -> SymbolTable:
        done = subprocess.run([nm, "--defined-only", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise HanascError(f"{nm} failed on {path}: {done.stderr.strip()[-200:]}")
        funcs = sorted(
            (int(fields[0], 16), fields[2])
            for fields in (line.split() for line in done.stdout.splitlines())
            if len(fields) == 3 and fields[1] in "Tt"
        )
        return cls(Path(path), load_segments(path), [f[0] for f in funcs], [f[1] for f in funcs])

    def function_at(self, file_offset: int) -> str | None:
        """The function whose code holds ``file_offset`` (None: before the first function, or outside
        every loadable segment)."""
        vaddr = offset_to_vaddr(self.segments, file_offset)
        i = bisect.bisect_right(self.starts, vaddr) - 1 if vaddr is not None else -1
        return self.names[i] if i >= 0 else None

    def address_of(self, name: str) -> int:
        """The file offset of a function's first instruction."""
        start = self.starts[self.names.index(name)]
        for s in self.segments:
            if s.vaddr <= start < s.vaddr + s.size:
                return s.offset + start - s.vaddr
        raise HanascError(f"{self.path}: {name} lies in no loadable segment")


def kernel_name(symbol: str) -> str:
    """The TVM kernel a model library's symbol belongs to: its PrimFunc's name, without the exported
    wrapper's prefix or the parallel body's suffix."""
    name = symbol.removeprefix(TVM_EXPORT_PREFIX)
    return name.removesuffix(TVM_LAMBDA_SUFFIX)
