"""Sub-byte weight storage: pack signed 4-bit / 2-bit integers into uint8 and unpack them in a Relax graph.

TVM's native ``int4`` is broken (wrong conv results, no ``astype``), so 4- and 2-bit weights are stored as
a flat ``uint8`` array holding ``8 // bits`` two's-complement values per byte and unpacked to ``int8`` inside
the graph. Layout: the weight is flattened in C order and zero-padded to a multiple of ``8 // bits``;
value ``i`` lives in byte ``i // k`` at bits ``[(i % k) * bits, (i % k + 1) * bits)`` (``k = 8 // bits``),
so the first value of a byte is in its lowest bits.

The dot-product kernels read another layout, unpacked inside the kernel (:func:`pack_tiles`): their weight
``(O/ob, Kh, Kw, T, ob, g)`` is cut along ``T`` into groups of ``8 // bits`` consecutive tiles of ``ob x g``
values that share the bytes of one tile, tile ``t`` in the bits ``[(t % k) * bits, (t % k + 1) * bits)``.
A tile is then unpacked by shifting its field to the top of each byte and masking the rest
(:func:`scaled_tiles`): whole vector registers at a time, each value multiplied by ``2 ** (8 - bits)``,
which the kernel divides out of its int32 sums.
"""

from __future__ import annotations

import numpy as np

PACKED_BITS = (4, 2)


def values_per_byte(bits: int) -> int:
    if bits not in PACKED_BITS:
        raise ValueError(f"packing supports {PACKED_BITS} bits, not {bits}")
    return 8 // bits


def packed_size(count: int, bits: int) -> int:
    """Bytes needed to store ``count`` values of ``bits`` bits."""
    k = values_per_byte(bits)
    return -(-count // k)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed integers in ``[-2**(bits-1), 2**(bits-1) - 1]`` into a flat uint8 array."""
    k = values_per_byte(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    flat = np.asarray(q).reshape(-1).astype(np.int16)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"values outside the signed {bits}-bit range [{lo}, {hi}]")
    fields = (np.pad(flat, (0, packed_size(flat.size, bits) * k - flat.size)) & (2**bits - 1)).astype(
        np.uint8
    )
    fields = fields.reshape(-1, k)
    packed = np.zeros(fields.shape[0], np.uint8)
    for slot in range(k):
        packed |= fields[:, slot] << np.uint8(slot * bits)
    return packed


def unpack_bits(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """The numpy inverse of :func:`pack_bits`: int8 values of ``shape``."""
    k = values_per_byte(bits)
    slots = [(packed.astype(np.int16) >> (slot * bits)) & (2**bits - 1) for slot in range(k)]
    fields = np.stack(slots, axis=-1).reshape(-1)[: int(np.prod(shape))]
    half = 2 ** (bits - 1)
    return (((fields + half) & (2**bits - 1)) - half).astype(np.int8).reshape(shape)


TILE_AXIS = 3  # the T axis of a dot conv's weight (O/ob, Kh, Kw, T, ob, g): tiles of ob x g values


def tiles_pack(rows: int, bits: int) -> bool:
    """Whether ``rows`` tiles (the weight's T axis) group into whole bytes of ``bits``-bit fields."""
    return bits in PACKED_BITS and rows % values_per_byte(bits) == 0


def pack_tiles(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed ``bits``-bit values of a dot conv's weight ``(O/ob, Kh, Kw, T, ob, g)`` -> uint8
    ``(O/ob, Kh, Kw, T / k, ob, g)``, ``k = 8 // bits`` tiles a byte (:func:`tiles_pack`)."""
    k = values_per_byte(bits)
    shape = values.shape
    fields = (values.astype(np.int16) & (2**bits - 1)).astype(np.uint8)
    grouped = fields.reshape(*shape[:TILE_AXIS], shape[TILE_AXIS] // k, k, *shape[TILE_AXIS + 1 :])
    packed = np.zeros(grouped.shape[: TILE_AXIS + 1] + grouped.shape[TILE_AXIS + 2 :], np.uint8)
    for slot in range(k):
        packed |= grouped[:, :, :, :, slot] << np.uint8(slot * bits)
    return packed


def scaled_tiles(packed: np.ndarray, bits: int) -> np.ndarray:
    """What a kernel unpacks from :func:`pack_tiles`'s bytes: int8 values times ``2 ** (8 - bits)`` (the
    field shifted to the top of the byte, the lower bits cleared), ``(O/ob, Kh, Kw, T, ob, g)``."""
    k = values_per_byte(bits)
    top = np.uint8((0xFF << (8 - bits)) & 0xFF)
    slots = [(packed << np.uint8(8 - bits * (slot + 1))) & top for slot in range(k)]
    stacked = np.stack(slots, axis=TILE_AXIS + 1)
    shape = packed.shape
    return stacked.reshape(*shape[:TILE_AXIS], shape[TILE_AXIS] * k, *shape[TILE_AXIS + 1 :]).view(np.int8)


def unpack_expr(packed, bits: int, shape: tuple[int, ...]):
    """Relax expression unpacking a flat uint8 ``packed`` tensor into an int8 tensor of ``shape``.

    Per slot: shift the field to the top of the byte (``left_shift``), reinterpret as int8 (``astype``,
    same width), and shift back arithmetically (``right_shift``), which sign-extends it.
    """
    from tvm import relax

    k = values_per_byte(bits)
    count = int(np.prod(shape))
    fields = []
    for slot in range(k):
        top = relax.op.left_shift(packed, relax.const(8 - bits * (slot + 1), "uint8"))
        signed = relax.op.right_shift(relax.op.astype(top, "int8"), relax.const(8 - bits, "int8"))
        fields.append(relax.op.expand_dims(signed, -1))
    flat = relax.op.reshape(relax.op.concat(fields, axis=-1), (packed_size(count, bits) * k,))
    if packed_size(count, bits) * k != count:
        flat = relax.op.strided_slice(flat, axes=[0], begin=[0], end=[count])
    return relax.op.reshape(flat, shape)


_UNPACK_OPS = {
    "relax.reshape",
    "relax.strided_slice",
    "relax.concat",
    "relax.expand_dims",
    "relax.right_shift",
    "relax.astype",
    "relax.left_shift",
}


def unpacked_param(var, lookup, params) -> tuple[str, int, tuple[int, ...]] | None:
    """``(parameter, bits, shape)`` when ``var`` is :func:`unpack_expr` of one parameter named in
    ``params`` (the ops it emits, constants and that parameter only; ``lookup(var)``: the value a var is
    bound to, or None), else None."""
    import tvm
    from tvm import relax

    value = lookup(var)
    if not isinstance(value, relax.Call) or value.op != tvm.ir.Op.get("relax.reshape"):
        return None
    sources: set[str] = set()
    fields = 0
    stack, seen = [value], 0
    while stack and seen < 64:
        expr, seen = stack.pop(), seen + 1
        if isinstance(expr, relax.Var):
            if expr.name in params:
                sources.add(expr.name)
                continue
            bound = lookup(expr)
            if bound is None:
                return None
            stack.append(bound)
        elif isinstance(expr, relax.Tuple):
            stack.extend(expr.fields)
        elif isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            if expr.op.name not in _UNPACK_OPS:
                return None
            if expr.op.name == "relax.concat":
                fields = len(expr.args[0].fields) if isinstance(expr.args[0], relax.Tuple) else 0
            stack.extend(a for a in expr.args if isinstance(a, (relax.Var, relax.Tuple, relax.Call)))
        elif not isinstance(expr, (tvm.ir.expr.Constant, relax.ShapeExpr)):
            return None
    if stack or len(sources) != 1 or fields not in (2, 4):
        return None
    (source,) = sources
    shape = tuple(int(d) for d in value.ty.shape)
    return source, 8 // fields, shape
