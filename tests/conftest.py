"""Shared fixtures: test models exported once per session, EfficientNet-Lite0 from the zoo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import TORCH_MODELS, export_torch_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def test_models(model_dir) -> dict[str, Path]:
    """Every small torch test model, exported raw (BatchNorm included) to ONNX."""
    return {name: export_torch_model(name, model_dir) for name in TORCH_MODELS}


@pytest.fixture(scope="session")
def effnet_path() -> Path:
    """EfficientNet-Lite0 with ImageNet weights, exported from installed packages into the user cache."""
    from hanasc.model_zoo import fetch

    return fetch("efficientnet-lite0")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``hanasc`` command and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "hanasc.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
