"""The profiler times a kernel through a real TVM RPC server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest


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


def test_time_one_kernel_over_rpc(rpc_server):
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.profiler import Session, TimingConfig, time_kernel
    from hanasc.cost_models.sweep import LayerShape, layer_module
    from hanasc.cost_models.target_info import get_target

    kernel = lower_to_kernels(layer_module(LayerShape(16, 16, 16, 16, 3))).kernels[0]
    timing = TimingConfig(repeat=3, min_repeat_ms=5)
    session = Session.from_address(rpc_addr=f"127.0.0.1:{rpc_server}")
    assert session.device_id == f"rpc:127.0.0.1:{rpc_server}"
    remote = time_kernel(kernel.prim_func, get_target("host"), session, timing)
    local = time_kernel(kernel.prim_func, get_target("host"), Session.local(), timing)
    assert len(remote.samples_s) == 3 and remote.median_s > 0
    # same code, same CPU: the two must agree to within noise of a shared machine
    assert 0.2 < remote.median_s / local.median_s < 5.0
