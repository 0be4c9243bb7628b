"""Mutants of small ONNX fixture models for fuzzing hanasc's ONNX boundary: the registry of mutators
(:mod:`fuzzing.onnx_mutators`: each breaks one thing a real exporter or a hand edit can: shapes, dtypes,
attributes, initializers, graph structure), byte-level damage, and :func:`make_mutant`.
:mod:`fuzzing.fuzz_runner` runs the CLI on them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from fuzzing.onnx_mutators import (
    m_attribute,
    m_cycle,
    m_dangling,
    m_dtype,
    m_duplicate,
    m_external_data,
    m_huge_constant,
    m_initializer,
    m_input_shape,
    m_metadata,
    m_missing_initializer,
    m_op_type,
    m_opset,
    m_option,
    m_structure,
    m_valid_attribute,
    m_value_info_shape,
    m_values,
    real_inputs,
)


@dataclass
class Mutant:
    """One mutated model: where it was written and what was done to it."""

    fixture: str
    mutator: str
    detail: str
    path: Path
    input_shape: tuple[int, ...]


PROTO_MUTATORS: dict[str, Callable[[random.Random, onnx.ModelProto, Path], str]] = {
    "attribute": m_attribute,
    "input_shape": m_input_shape,
    "value_info_shape": m_value_info_shape,
    "initializer": m_initializer,
    "dtype": m_dtype,
    "dangling": m_dangling,
    "duplicate": m_duplicate,
    "cycle": m_cycle,
    "missing_initializer": m_missing_initializer,
    "external_data": m_external_data,
    "opset": m_opset,
    "op_type": m_op_type,
    "structure": m_structure,
    "huge_constant": m_huge_constant,
    "metadata": m_metadata,
    "values": m_values,
    "valid_attribute": m_valid_attribute,
    "option": m_option,
}
BYTE_MUTATORS = ("truncate", "bitflip")
MUTATORS = (*PROTO_MUTATORS, *BYTE_MUTATORS, "combo")


def _option_args(rng: random.Random, name: str, shape: tuple[int, ...]) -> list[str]:
    dims = "x".join(str(d) for d in shape)
    text = rng.choice(
        [
            f"{name}=" + "x".join(["99999999999999999999"] + [str(d) for d in shape[1:]]),
            f"{name}=" + "x".join(str(d * 100000) for d in shape),
            f"{name}=" + "x".join(str(d) for d in shape[:-1]),
            f"{name}=0x{dims}",
            f"={dims}",
            f"{name}={dims}x",
            f"{name}=1x-3",
            f"nope={dims}",
            f"{name}={dims}",
        ]
    )
    return ["--input-shape", text]


def make_mutant(
    rng: random.Random, fixture: str, model: onnx.ModelProto, folder: Path, mutator: str | None = None
) -> tuple[Mutant, list[str]]:
    """Write one mutant of ``model`` into ``folder/model/model.onnx``; return it and extra CLI args."""
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shape = tuple(d.dim_value for d in real_inputs(model.graph)[0].type.tensor_type.shape.dim)
    name = real_inputs(model.graph)[0].name
    mutated = onnx.ModelProto()
    mutated.CopyFrom(model)
    mutator = mutator or rng.choice(MUTATORS)
    steps = [rng.choice([m for m in PROTO_MUTATORS if m != "option"]) for _ in range(2)]
    steps = steps if mutator == "combo" else [mutator]
    details, extra = [], []
    for step in steps:
        if step in PROTO_MUTATORS:
            try:
                details.append(PROTO_MUTATORS[step](rng, mutated, model_dir))
            except (IndexError, ValueError) as exc:  # a mutator that does not apply to this graph
                details.append(f"{step} not applicable ({type(exc).__name__})")
            if step == "option":
                extra = _option_args(rng, name, shape)
                details[-1] = f"{extra[0]} {extra[1]}"
    data = mutated.SerializeToString()
    if mutator == "truncate":
        cut = rng.randrange(len(data))
        details.append(f"truncated to {cut} of {len(data)} bytes")
        data = data[:cut]
    elif mutator == "bitflip":
        buf = bytearray(data)
        flips = rng.randint(1, 8)
        for _ in range(flips):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        data = bytes(buf)
        details.append(f"{flips} bits flipped")
    path = model_dir / "model.onnx"
    path.write_bytes(data)
    return Mutant(fixture, mutator, "; ".join(details), path, shape), extra
