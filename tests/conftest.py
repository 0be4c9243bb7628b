"""Shared fixtures: test models exported once per session, EfficientNet-Lite0 from the zoo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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
    from hanasc.frontend.model_zoo import fetch

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_server():
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvm.exec.rpc_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-end",
            str(port + 1),
        ],
        start_new_session=True,  # its popen workers outlive it: end the whole group
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("RPC server did not start")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
