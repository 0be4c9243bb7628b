"""hanasc: a hardware-aware model compiler (HA-NAS joint quantization + architecture search on TVM).

The Python API (:mod:`hanasc.api`), one function per command::

    import hanasc

    r = hanasc.compile("m.onnx", target="host", budget="0.8x", data="d.npz", out="dir")
    hanasc.apply("m.onnx", r.artifact.config, out="again")

``hanasc.compile``, ``apply``, ``costs``, ``calibrate``, ``profile`` and ``inspect`` are imported on first
use, so ``import hanasc`` loads no TVM, torch or OpenVINO.
"""

from __future__ import annotations

import sys
import types

from hanasc.core.errors import HanascError
from hanasc.frontend.loading import LoadedModel, load_model

API = ("compile", "apply", "costs", "calibrate", "profile", "inspect")
RESULTS = ("CompileResult", "ApplyResult", "CostsResult", "CalibrateResult", "ProfileResult", "InspectResult")

__all__ = ["HanascError", "LoadedModel", "load_model", "NoModelMeetsBudgets", *API, *RESULTS]
__version__ = "0.1.0"


class _CompilePackage(types.ModuleType):
    """``hanasc.compile`` is two things by name: the compile job's sub-package (``hanasc.compile.pipeline``,
    ...) and, called, :func:`hanasc.api.compile`. Its module object gets this class, so both work."""

    def __call__(self, model, **options):
        import hanasc.api

        return hanasc.api.compile(model, **options)


class _Package(types.ModuleType):
    """The ``hanasc`` package module: when the import system binds the ``compile`` sub-package to it, the
    sub-package becomes callable (:class:`_CompilePackage`)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "compile" and type(value) is types.ModuleType:
            value.__class__ = _CompilePackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    """The API's functions and result types, imported on first use (the building jobs load TVM)."""
    if name == "compile":
        import hanasc.compile  # binds the (callable) sub-package as this attribute

        return sys.modules["hanasc.compile"]
    if name in API or name in RESULTS or name == "NoModelMeetsBudgets":
        import hanasc.api

        return getattr(hanasc.api, name)
    raise AttributeError(f"module 'hanasc' has no attribute '{name}'")
