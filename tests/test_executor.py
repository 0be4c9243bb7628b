"""The executor seam (hanasc.core.executor): content keys, the in-process default, the options' checks
(without starting Ray), and a built host library stored and loaded by its content address."""

from __future__ import annotations

import importlib.util
import socket
import sys

import numpy as np
import pytest

from hanasc.core import executor
from hanasc.core.errors import HanascError
from hanasc.core.executor import (
    CLUSTER_EXTRA,
    InProcessExecutor,
    WorkUnit,
    check_executor_options,
    cluster_address,
    content_key,
    make_executor,
)


def _square(x: int) -> int:
    return x * x


def test_content_key_names_the_content():
    assert content_key("mod", {"a": 1, "b": 2}) == content_key("mod", {"b": 2, "a": 1})
    assert content_key("mod", {"a": 1}) != content_key("mod", {"a": 2})
    assert content_key("ab", "c") != content_key("a", "bc")  # parts are not just concatenated


def test_in_process_executor_returns_results_in_submission_order():
    units = [WorkUnit(content_key(i), _square, (i,), f"unit {i}") for i in (3, 1, 2)]
    with make_executor() as ex:
        assert isinstance(ex, InProcessExecutor) and ex.workers == 1
        assert ex.map(units) == [9, 1, 4]


def test_one_worker_is_the_in_process_executor():
    assert isinstance(make_executor(workers=1), InProcessExecutor)


def test_the_default_imports_no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any import of ray fails
    with make_executor(workers=None, cluster=None) as ex:
        assert ex.map([WorkUnit("k", _square, (5,))]) == [25]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize(
    "workers,cluster,needles",
    [
        (0, None, ["--workers 0", "1 or more"]),
        (None, "ray://127.0.0.1:1", ["--cluster ray://127.0.0.1:1", "no Ray cluster answers"]),
        (None, "ray://nohost", ["--cluster ray://nohost", "ray://HOST:PORT"]),
    ],
)
def test_bad_executor_options_are_one_line(workers, cluster, needles):
    with pytest.raises(HanascError) as err:
        check_executor_options(workers, cluster)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles)


def test_a_closed_port_is_refused_before_ray_starts():
    port = _closed_port()
    with pytest.raises(HanascError, match=f"127.0.0.1:{port}"):
        make_executor(cluster=f"ray://127.0.0.1:{port}")


def test_workers_without_ray_name_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        executor.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(HanascError) as err:
        make_executor(workers=2)
    assert "--workers 2" in str(err.value) and CLUSTER_EXTRA in str(err.value)


def test_ray_address_is_the_default_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert cluster_address(None) == "ray://head:10001"
    assert cluster_address("ray://other:10001") == "ray://other:10001"


def test_a_stored_build_runs_and_exports_as_built(tmp_path):
    """The work unit's library, kept by content address, loads, runs like the in-memory build and is
    exported (the report's model.so) byte for byte."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from hanasc.compile.verify_builds import BuildStore, build_library
    from hanasc.targets import host

    @tvm.script.ir_module
    class Double:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")):
            y = R.add(x, x)
            return y

    store = BuildStore(tmp_path / "builds")
    key = content_key(tvm.ir.save_json(Double))
    assert store.fetch(key) is None
    library = build_library(tvm.ir.save_json(Double), str(host.tvm_target()))
    built = store.put(key, library)
    fetched = store.fetch(key)
    assert (store.built, store.fetched) == (1, 1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for executable in (built, fetched):
        vm = relax.VirtualMachine(executable, tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), 2 * x)
    fetched.export_library(tmp_path / "model.so")
    assert (tmp_path / "model.so").read_bytes() == library
