"""hanasc: a hardware-aware model compiler (HA-NAS joint quantization + architecture search on TVM)."""

from __future__ import annotations

from hanasc.core.errors import HanascError
from hanasc.frontend.loading import LoadedModel, load_model

__all__ = ["HanascError", "LoadedModel", "load_model"]
__version__ = "0.1.0"
