"""The per-layer Config: the plain, serializable policy every hanasc pass takes (layer name -> choices)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError

WEIGHT_BITS = (32, 16, 8, 4, 2)  # 32: float weights unchanged; 16: fp16; 8/4/2: symmetric per output channel
ACT_BITS = (32, 16, 8)  # of the layer's input: 32 unchanged; 16: fp16; 8: int8 per tensor
WIDTHS = (1.0, 0.75, 0.5, 0.25)


class ConfigError(HanascError):
    """A Config that is malformed or asks for a choice the layer or target does not allow."""


def _register_with_tvm_ffi() -> None:
    """A ConfigError raised inside a pass crosses TVM's FFI; registered, it comes back out as itself."""
    import tvm_ffi

    tvm_ffi.error.register_error("ConfigError", ConfigError)


_register_with_tvm_ffi()


@dataclass(frozen=True)
class ExtraField:
    """A per-layer field a registered choice kind adds without a LayerChoice attribute of its own."""

    name: str
    default: object
    check: Callable[[object], str | None] | None = None  # a bad value -> why (None: fine)


_EXTRA_FIELDS: dict[str, ExtraField] = {}


def declare_field(spec: ExtraField) -> None:
    """Let LayerChoice carry ``spec.name`` (in its ``extra`` mapping, JSON after the named fields)."""
    if spec.name in {f.name for f in fields(LayerChoice)}:
        raise ValueError(f"'{spec.name}' is a LayerChoice attribute already")
    _EXTRA_FIELDS[spec.name] = spec


def forget_field(name: str) -> None:
    _EXTRA_FIELDS.pop(name, None)


@dataclass
class LayerChoice:
    """The choices for one searchable layer; the defaults leave the layer as it is.

    ``extra`` holds the non-default values of fields that registered kinds declare (:func:`declare_field`);
    read and write every field with :meth:`get` and :meth:`set`.
    """

    w_bits: int = 32
    a_bits: int = 32
    separable: bool = False  # KxK conv (groups=1) -> depthwise KxK + pointwise 1x1
    width: float = 1.0  # ratio of output channels kept
    kernel: int | None = None  # shrink KxK to this size (centre crop); None keeps it
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.extra = {k: v for k, v in self.extra.items() if v != _default(k)}

    def get(self, name: str) -> object:
        if name in _NAMED:
            return getattr(self, name)
        return self.extra.get(name, _default(name))

    def set(self, name: str, value: object) -> None:
        if name in _NAMED:
            setattr(self, name, value)
        elif value == _default(name):
            self.extra.pop(name, None)
        else:
            self.extra[name] = value

    def values(self) -> dict[str, object]:
        """Every field's value: the named ones, then the declared extra ones."""
        return {**{k: getattr(self, k) for k in _NAMED}, **{k: self.get(k) for k in _EXTRA_FIELDS}}

    def is_identity(self) -> bool:
        return self == LayerChoice()


_NAMED = tuple(f.name for f in fields(LayerChoice) if f.name != "extra")


def _default(name: str) -> object:
    if name in _EXTRA_FIELDS:
        return _EXTRA_FIELDS[name].default
    raise ConfigError(f"unknown choice '{name}' (allowed: {', '.join(sorted(choice_fields()))})")


def choice_fields() -> tuple[str, ...]:
    """Every per-layer field a Config can carry."""
    return (*_NAMED, *_EXTRA_FIELDS)


@dataclass
class Config:
    """A whole model's choices: per-layer choices plus the residual blocks to skip.

    ``layers`` maps a layer name (see ``hanasc inspect``) to its :class:`LayerChoice`; layers not named keep
    their defaults. ``skip`` names residual blocks (see ``SearchSpace.blocks``) to drop.
    """

    layers: dict[str, LayerChoice] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)

    def choice(self, layer: str) -> LayerChoice:
        return self.layers.get(layer, LayerChoice())

    def is_identity(self) -> bool:
        return not self.skip and all(c.is_identity() for c in self.layers.values())

    def to_json(self) -> dict:
        layers = {}
        for name, choice in self.layers.items():
            default = LayerChoice()
            changed = {k: v for k, v in choice.values().items() if v != default.get(k)}
            if changed:
                layers[name] = changed
        return {"format": "hanasc.config/1", "layers": layers, "skip": list(self.skip)}

    @classmethod
    def from_json(cls, data: dict, source: str = "config") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object with 'layers' and 'skip'")
        unknown = set(data) - {"format", "layers", "skip"}
        if unknown:
            raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}' (expected 'layers', 'skip')")
        raw_layers = data.get("layers", {})
        if not isinstance(raw_layers, dict):
            raise ConfigError(f"{source}: 'layers' must be an object of layer name -> choices")
        allowed = set(choice_fields())
        layers = {}
        for name, raw in raw_layers.items():
            if not isinstance(raw, dict):
                raise ConfigError(f"{source}: layer '{name}': choices must be an object")
            bad = set(raw) - allowed
            if bad:
                raise ConfigError(
                    f"{source}: layer '{name}': unknown choice '{sorted(bad)[0]}' "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
            choice = LayerChoice(
                **{k: v for k, v in raw.items() if k in _NAMED},
                extra={k: v for k, v in raw.items() if k not in _NAMED},
            )
            _check_values(choice, f"{source}: layer '{name}'")
            layers[name] = choice
        skip = data.get("skip", [])
        if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
            raise ConfigError(f"{source}: 'skip' must be a list of block names")
        return cls(layers=layers, skip=list(skip))

    def save(self, path: Path) -> None:
        with atomic_file(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: malformed JSON ({exc})") from None
        return cls.from_json(data, source=str(path))


def _check_values(choice: LayerChoice, where: str) -> None:
    if choice.w_bits not in WEIGHT_BITS:
        raise ConfigError(f"{where}: w_bits={choice.w_bits} not in {WEIGHT_BITS}")
    if choice.a_bits not in ACT_BITS:
        raise ConfigError(f"{where}: a_bits={choice.a_bits} not in {ACT_BITS}")
    if not isinstance(choice.separable, bool):
        raise ConfigError(f"{where}: separable must be true or false")
    if not isinstance(choice.width, int | float) or not 0.0 < choice.width <= 1.0:
        raise ConfigError(f"{where}: width={choice.width} must be in (0, 1]")
    if choice.kernel is not None and (
        not isinstance(choice.kernel, int) or choice.kernel < 1 or choice.kernel % 2 == 0
    ):
        raise ConfigError(f"{where}: kernel={choice.kernel} must be an odd positive integer")
    if choice.a_bits == 8 and choice.w_bits > 8:
        raise ConfigError(f"{where}: a_bits=8 needs w_bits <= 8 (integer compute)")
    for name, value in choice.extra.items():
        spec = _EXTRA_FIELDS[name]
        problem = spec.check(value) if spec.check else None
        if problem:
            raise ConfigError(f"{where}: {name}={value} {problem}")
