"""Scale-out with real Ray: the executor's tasks, and a small compile that chooses the same Config
in-process and with ``--workers 2``, whose finished builds a later run fetches instead of redoing."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import test_cli_compile
from conftest import run_cli
from test_bad_input import assert_one_line_error

from hanasc.core.executor import RayExecutor, WorkUnit, content_key

SMALL = test_cli_compile.SMALL
data = test_cli_compile.data  # the fixture: the same small data set as the compile tests
SUMMARY = re.compile(r"verification builds: (\d+) built on (.+?) in \d+ batch\(es\), (\d+) fetched")


def _compile(model, data, out, cache, *extra):
    args = ["--data", str(data), "--metric", "agreement", "--budget", "5x", "--out", str(out), *SMALL]
    result = run_cli("compile", str(model), *args, *extra, env={"HANASC_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr[-2000:]
    found = SUMMARY.search(result.stdout)
    assert found, result.stdout[-2000:]
    built, where, fetched = int(found[1]), found[2], int(found[3])
    return json.loads((out / "config.json").read_text()), built, where, fetched


@pytest.mark.slow
def test_ray_tasks_keep_order_and_raise_the_work_s_own_error():
    with RayExecutor(workers=2) as ex:
        assert ex.workers == 2 and "2 local Ray workers" in ex.where
        # the work runs in worker processes: its functions are importable ones (test modules are not)
        units = [WorkUnit(content_key(i), math.factorial, (i,)) for i in (4, 2, 3)]
        assert ex.map(units) == [24, 2, 6]
        with pytest.raises(ValueError, match="seven"):  # the work's own error, not retried (same again)
            ex.map([WorkUnit(content_key("seven"), int, ("seven",))])


@pytest.mark.slow
def test_workers_choose_the_in_process_config_and_builds_are_fetched(tmp_path, test_models, data):
    model = test_models["dense_head"]
    alone, built, where, fetched = _compile(model, data, tmp_path / "a", tmp_path / "cache-a")
    assert (built, where, fetched) == (1, "this process", 0)
    # the same run resumed with its builds removed: the search (whose estimates rest on timings, which
    # differ between any two runs of a tiny model) is reused, the verification walk builds on Ray again
    ray_cache = tmp_path / "cache-ray"
    shutil.copytree(tmp_path / "cache-a", ray_cache)
    for builds in (ray_cache / "runs").glob("*/builds"):
        shutil.rmtree(builds)
    spread, built, where, fetched = _compile(
        model, data, tmp_path / "b", ray_cache, "--workers", "2", "--resume"
    )
    assert spread == alone  # the walk's answer does not depend on where the builds ran
    assert where == "2 local Ray workers" and built == 2 and fetched == 0  # the next candidate built beside
    # the same run again in-process: the Ray workers' build of the chosen candidate is fetched, not redone
    again, built, where, fetched = _compile(model, data, tmp_path / "c", ray_cache, "--resume")
    assert again == alone and built == 0 and fetched == 1
    assert where.startswith("no executor")


def test_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path, test_models, data):
    out = tmp_path / "o"
    args = ["--data", str(data), "--out", str(out), "--cluster", "ray://127.0.0.1:1"]
    result = run_cli("compile", str(test_models["dense_head"]), *args, env={"HANASC_CACHE": str(tmp_path)})
    assert_one_line_error(result, "--cluster ray://127.0.0.1:1", "no Ray cluster answers")
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_workers_without_ray_name_the_extra(tmp_path, test_models, data):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    out = tmp_path / "o"
    args = ["--data", str(data), "--out", str(out), "--workers", "2"]
    result = run_cli("compile", str(test_models["dense_head"]), *args, env={"PYTHONPATH": str(blocker)})
    assert_one_line_error(result, "--workers 2", "pip install hanasc[cluster]")
    assert not out.exists()
