"""Functions MetaSchedule runs in its worker processes (pickled by reference, so this module stays light).

The default build function imports ``tvm.s_tir.tensor_intrin`` in every worker, which takes 100-150 s on a
small machine (TVMScript parsing of the CUDA intrinsics) and times the builds out. These do without it.
"""

from __future__ import annotations


def build_kernel(mod, target, _params):
    """Build one scheduled PrimFunc module (MetaSchedule's default build, minus the intrinsics import)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def export_aarch64(rt_mod) -> str:
    """Cross-link a built kernel into an aarch64 shared library for an RPC device; returns its path."""
    import os
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def connect_server(rpc_config):
    """An RPC session straight to a server (no tracker); ``tracker_host``/``tracker_port`` are its address."""
    from tvm import rpc

    return rpc.connect(
        rpc_config.tracker_host,
        int(rpc_config.tracker_port),
        session_timeout=rpc_config.session_timeout_sec or 0,
    )
