"""int8 GEMMs and convolutions on NVIDIA GPUs as ``dp4a``: four byte products summed into an int32 a lane.

dlight's ``Matmul`` rule would give an int8 x int8 -> int32 kernel either tensor-core ``wmma`` fragments
(``MatmulInt8Tensorization``, which TVM 0.27 fails to lower for convolutions: ``InjectSoftwarePipeline``
finds no fragment size) or one scalar multiply-add per product. :class:`Dp4aMatmul` comes first instead:
the same normalization to ``C[S, I, J] += A[S, I, K] * B[S, J, K]`` (convolutions through their implicit
im2col, padding inlined into the shared-memory fetch), a register tile of ``micro`` x ``micro`` outputs a
thread, and the innermost four steps of ``K`` as one ``__dp4a`` on 32-bit words read from shared memory
(``dp4a.s32.s32`` in the PTX; sm_61 and newer). Shared rows are kept 4-byte aligned so that each word
load is aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (
    auto_inline_consumer_chain,
    auto_inline_producers,
    check_sm_version,
    get_index_map,
)
from tvm.target import Target

from hanasc.targets.cuda_schedules import single_reduction

MIN_SM = 61  # dp4a exists from compute capability 6.1
_SIGNED_PAIRS = (("int8", "int8"), ("uint8", "int8"), ("int8", "uint8"))


def _dp4a_func(a_dtype: str, b_dtype: str, impl: bool = True):
    """Four byte products summed into an int32 accumulator: the description (``impl`` False) or the
    implementation, one ``__dp4a`` that takes the accumulator as its third operand (no separate add; TVM's
    own dp4a intrinsic adds to 0, then adds)."""
    from tvm.script import tirx as T

    lanes = {"int8": "int8x4", "uint8": "uint8x4"}

    @T.prim_func(s_tir=True)
    def func(
        a: T.Buffer((4,), a_dtype, offset_factor=1, align=4, scope="shared"),
        b: T.Buffer((4,), b_dtype, offset_factor=1, align=4, scope="shared"),
        c: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0], a[0:4], b[0:4])
            T.writes(c[0])
            if impl:
                c[0] = T.call_pure_extern(
                    "__dp4a", a.vload([0], lanes[a_dtype]), b.vload([0], lanes[b_dtype]), c[0], dtype="int32"
                )
            else:
                for k in range(4):
                    with T.sblock("update"):
                        vk = T.axis.remap("R", [k])
                        c[0] = c[0] + T.cast(a[vk], "int32") * T.cast(b[vk], "int32")

    return func


def intrinsic_name(a_dtype: str, b_dtype: str) -> str:
    """The registered name of the accumulating dp4a intrinsic for these operand dtypes (registered once)."""
    name = f"hanasc_dp4a_{a_dtype}_{b_dtype}_acc"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _dp4a_func(a_dtype, b_dtype, impl=False), _dp4a_func(a_dtype, b_dtype))
    return name


@dataclass(frozen=True)
class Dp4aTile:
    """Threads of a block along I and J, outputs a thread along each, and K per shared-memory stage."""

    threads_i: int = 16
    threads_j: int = 8
    micro: int = 4
    k_step: int = 32


def operand_dtypes(block) -> tuple[str, str] | None:
    """``(A, B)`` byte dtypes of a reduction block that sums int32 products of two int8 / uint8 reads."""
    reads = [str(r.source.dtype) for r in block.reads]
    writes = [str(w.source.dtype) for w in block.writes]
    if writes != ["int32"]:
        return None
    operands = [d for d in reads if d != "int32"]
    if len(operands) != 2 or tuple(operands) not in _SIGNED_PAIRS:
        return None
    return operands[0], operands[1]


class Dp4aMatmul(GPUScheduleRule):
    """dlight rule: int8 / uint8 GEMM-like reductions (dense, conv2d) on CUDA as ``__dp4a`` (sm_61+)."""

    def __init__(self, tile: Dp4aTile | None = None) -> None:
        self.tile = tile or Dp4aTile()

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if target.kind.name != "cuda" or check_sm_version(str(target.attrs.get("arch", ""))) < MIN_SM:
            return None
        found = single_reduction(self, func, target)
        if found is None:
            return None
        sch, main = found
        stmt = sch.get(main)
        dtypes = operand_dtypes(stmt)
        if dtypes is None or get_index_map(stmt) is None:  # operand_dtypes checked the int32 sum
            return None
        try:
            return self._schedule(sch, main, intrinsic_name(*dtypes))
        except Exception:  # TVM raises many types; a form the dp4a tiling does not take: dlight's scalar
            # GEMM schedule, never its int8 tensor-core one (which fails to lower convs in TVM 0.27)
            from tvm.s_tir import dlight

            return dlight.gpu.Matmul().apply(func.with_attr("dlight.do_not_tensorize", True), target, _)

    def _schedule(self, sch: s_tir.Schedule, main, intrinsic: str) -> s_tir.Schedule:
        t = self.tile
        reindexed = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1))]
        reindexed.append(sch.reindex(main, ("write", 0)))
        matmul_map, *operand_maps = get_index_map(sch.get(main))
        for block, side, index_map in zip(reindexed, ("write", "write", "read"), operand_maps, strict=True):
            sch.transform_layout(block, (side, 0), index_map)
        sch.transform_block_layout(main, matmul_map)
        sch.pad_einsum(main, [1, t.threads_i * t.micro, t.threads_j * t.micro, t.k_step])
        batch, i, j, k = sch.get_loops(main)
        bi, ti, ii = sch.split(i, [None, t.threads_i, t.micro])
        bj, tj, jj = sch.split(j, [None, t.threads_j, t.micro])
        ko, ki, k4 = sch.split(k, [None, t.k_step // 4, 4])
        sch.reorder(bi, bj, ti, tj, ko, ki, ii, jj, k4)
        sch.bind(sch.fuse(batch, bi), "blockIdx.y")
        sch.bind(bj, "blockIdx.x")
        sch.bind(ti, "threadIdx.y")
        sch.bind(tj, "threadIdx.x")
        write_back = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(write_back, tj, preserve_unit_loops=True)
        for index in (0, 1):
            self._fetch_to_shared(sch, main, index, ko)
        auto_inline_consumer_chain(sch, write_back)
        sch.decompose_reduction(main, ko)
        sch.tensorize(k4, intrinsic)
        sch.annotate(ki, "pragma_auto_unroll_max_step", 64)
        sch.annotate(ki, "pragma_unroll_explicit", 1)
        return sch

    def _fetch_to_shared(self, sch: s_tir.Schedule, main, index: int, ko) -> None:
        """All threads of the block copy one K stage of operand ``index`` to shared memory, 4 bytes each;
        rows padded to a multiple of 4 bytes (plus 4, against bank conflicts)."""
        t = self.tile
        block = sch.cache_read(main, index, "shared")
        loops = len(sch.get_loops(block))
        sch.compute_at(block, ko, preserve_unit_loops=True)
        fused = sch.fuse(*sch.get_loops(block)[-loops:])
        _, ty, tx, vec = sch.split(fused, [None, t.threads_i, t.threads_j, 4])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)
        sch.storage_align(block, 0, axis=-2, factor=16, offset=4)
        auto_inline_producers(sch, block)
