"""The profiler times a kernel through a real TVM RPC server on 127.0.0.1."""

from __future__ import annotations


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
