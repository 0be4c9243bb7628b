"""Sub-byte weight storage: pack signed 4-bit / 2-bit integers into uint8 and unpack them in a Relax graph.

TVM's native ``int4`` is broken (wrong conv results, no ``astype``), so 4- and 2-bit weights are stored as
a flat ``uint8`` array holding ``8 // bits`` two's-complement values per byte and unpacked to ``int8`` inside
the graph. Layout: the weight is flattened in C order and zero-padded to a multiple of ``8 // bits``;
value ``i`` lives in byte ``i // k`` at bits ``[(i % k) * bits, (i % k + 1) * bits)`` (``k = 8 // bits``),
so the first value of a byte is in its lowest bits.
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
