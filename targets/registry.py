"""The target registry: every target hanasc compiles for, by name and alias; the only ``get_target``.

Each target module (``hanasc.targets.host``, ...) defines its targets as ``TARGETS``
(:class:`hanasc.targets.base.Target`); :data:`TARGET_MODULES` lists those modules, and :func:`register`
adds one. Looking a target up imports no TVM; a module that cannot be imported leaves its targets out, and
asking for one says why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from hanasc.core.errors import HanascError
from hanasc.targets.base import OPS, Choices, Target

__all__ = ["OPS", "Choices", "Target", "all_targets", "check_choices", "get_target", "register"]


class UnknownTargetError(HanascError):
    """A target name that is not registered."""


class UnsupportedChoiceError(HanascError):
    """A Config asks a target for something it cannot run."""


TARGET_MODULES: list[str] = [
    "hanasc.targets.host",
    "hanasc.targets.cortex_a78",
    "hanasc.targets.jetson_orin",
    "hanasc.targets.vpu_targets",
]


def register(module: str) -> None:
    """Register the targets of ``module`` (an importable module defining ``TARGETS``): adding a target
    is its module plus this one call (or one more entry in :data:`TARGET_MODULES`)."""
    if module not in TARGET_MODULES:
        TARGET_MODULES.append(module)


@dataclass
class Registry:
    """Targets by name and alias, plus the modules that could not be imported (module -> reason)."""

    targets: dict[str, Target]
    aliases: dict[str, str]
    unavailable: dict[str, str]


def load_registry(modules: list[str] | tuple[str, ...] | None = None) -> Registry:
    """Build the registry from the targets of ``modules`` (default :data:`TARGET_MODULES`), in order."""
    infos: list[Target] = []
    unavailable: dict[str, str] = {}
    for module in TARGET_MODULES if modules is None else modules:
        try:
            infos.extend(importlib.import_module(module).TARGETS)
        except ModuleNotFoundError as exc:
            unavailable[module] = f"no module {exc.name}"
    targets: dict[str, Target] = {}
    aliases: dict[str, str] = {}
    for info in infos:
        for key in (info.name, *info.aliases):
            if key in targets or key in aliases:
                raise ValueError(f"target name '{key}' registered twice")
        targets[info.name] = info
        aliases.update({alias: info.name for alias in info.aliases})
    return Registry(targets, aliases, unavailable)


def all_targets(registry: Registry | None = None) -> list[Target]:
    """Every registered target, in registration order."""
    return list((registry or load_registry()).targets.values())


def get_target(name: str, registry: Registry | None = None) -> Target:
    """The target called ``name`` (or one of its aliases); a HanascError listing the known names otherwise."""
    registry = registry or load_registry()
    key = name.strip().lower()
    key = registry.aliases.get(key, key)
    if key in registry.targets:
        return registry.targets[key]
    known = ", ".join(
        info.name + (f" ({', '.join(info.aliases)})" if info.aliases else "")
        for info in registry.targets.values()
    )
    why = "".join(f"; {module} not loaded: {reason}" for module, reason in registry.unavailable.items())
    raise UnknownTargetError(f"unknown target '{name}'; known: {known}{why}")


def check_choices(target: Target | str, config, layers) -> None:
    """Raise UnsupportedChoiceError for the first layer choice ``target`` cannot run.

    ``config``: a ``hanasc.passes.config.Config``; ``layers``: the layer table (``LayerInfo`` list). Bits of
    32 mean "leave the layer as it is" and are always accepted: each target runs those in its own default
    precision (fp32 on the TVM targets, FP16 on the VPUs).
    """
    from hanasc.passes.kinds import by_column  # deferred: imports TVM (look-ups import no TVM)

    info = get_target(target) if isinstance(target, str) else target
    by_name = {layer.name: layer for layer in layers}
    ordered = by_column()
    for name, choice in config.layers.items():
        where = f"target '{info.name}', layer '{name}'"
        layer = by_name.get(name)
        if layer is None:
            raise UnsupportedChoiceError(f"{where}: no such layer in the model")
        allowed = info.choices_for(layer.op)
        for problem in [k.check_allowed(choice, allowed) for k in ordered] + [
            k.check_layer(choice, layer) for k in ordered
        ]:
            if problem:
                raise UnsupportedChoiceError(f"{where}: {problem}")
    for kind in ordered:
        problem = kind.check_config(config, info.choices)
        if problem:
            raise UnsupportedChoiceError(f"target '{info.name}': {problem}")
