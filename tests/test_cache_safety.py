"""The shared cache under interruption and concurrency: locks, repaired or rebuilt files, a search that
resumes exactly, compiles killed with SIGKILL that resume to the same result, two compiles at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hanasc.core.cache_safety import file_lock, repair_json_lines
from hanasc.cost_models.store import ProfileStore


def test_cut_short_last_line_is_dropped(tmp_path, capsys):
    path = tmp_path / "db.json"
    path.write_text('[1, "a"]\n[2, "b"]\n[3, "c', encoding="utf-8")
    assert repair_json_lines(path)
    assert path.read_text() == '[1, "a"]\n[2, "b"]\n'
    assert "incomplete last line" in capsys.readouterr().err


def test_corruption_before_the_end_moves_the_file_aside(tmp_path, capsys):
    path = tmp_path / "db.json"
    path.write_text("[1]\nnot json\n[3]\n")
    assert not repair_json_lines(path)
    assert not path.exists() and len(list(tmp_path.glob("db.json.corrupt-*"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "db.json" in err[0] and "rebuilt" in err[0]


def test_interrupted_tuning_database_still_opens(tmp_path):
    """A database whose last append was cut short loads (TVM itself fails on the cut line)."""
    from hanasc.targets.tuning_database import RECORDS, WORKLOADS, open_database

    (tmp_path / WORKLOADS).write_text('["abc", {"trunc')
    (tmp_path / RECORDS).write_text("[0, [1, 2")
    snapshot = open_database(tmp_path, snapshot=True)  # a reader: the shared files are not touched
    assert len(snapshot) == 0 and (tmp_path / WORKLOADS).read_text().startswith('["abc"')
    database = open_database(tmp_path)  # the tuner (holding the lock): the files are repaired
    assert len(database) == 0 and (tmp_path / WORKLOADS).read_text() == ""


def test_corrupt_profile_store_is_rebuilt_with_one_line(tmp_path):
    path = tmp_path / "profiles.sqlite"
    path.write_bytes(b"\x00garbage" * 64)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from hanasc.cost_models.store import ProfileStore; ProfileStore({str(path)!r})",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "profiles.sqlite" in lines[0] and "rebuilt" in lines[0]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _write_models(path: str, worker: int, count: int) -> None:
    from hanasc.cost_models.store import ModelRow

    with ProfileStore(path) as store:
        for i in range(count):
            store.put_model(ModelRow(f"h{worker}-{i}", "m", "host", "cpu", "0.27", 1.0 + i, 5, "measured"))


def test_concurrent_writers_share_the_profile_store(tmp_path):
    path = str(tmp_path / "profiles.sqlite")
    ProfileStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_models, args=(path, w, 40)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 160
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _hold(path: str, seconds: float, ready) -> None:
    with file_lock(Path(path), "the test folder"):
        ready.set()
        time.sleep(seconds)


def test_file_lock_makes_the_second_process_wait(tmp_path, capsys):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path / ".lock"), 1.5, ready))
    holder.start()
    assert ready.wait(60)
    started = time.perf_counter()
    with file_lock(tmp_path / ".lock", "the test folder"):
        waited = time.perf_counter() - started
    holder.join(30)
    assert waited > 0.5
    assert "in use by another hanasc process" in capsys.readouterr().err


def test_killed_holder_releases_the_lock(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path / ".lock"), 600, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    started = time.perf_counter()
    with file_lock(tmp_path / ".lock", "the test folder"):
        assert time.perf_counter() - started < 5


def test_search_resumed_from_any_generation_equals_the_uninterrupted_search(tmp_path):
    from hanasc.search.nsga2 import Budgets, NsgaSettings, run_search

    class Space:
        upper_bounds = np.array([3, 3, 3, 3, 3, 3])

        def __len__(self) -> int:
            return 6

        def sample(self, rng):
            return rng.integers(0, 4, 6)

    def objectives(genomes: np.ndarray):
        g = genomes.astype(float)
        acc = 1.0 - ((g - 1.5) ** 2).mean(axis=1) / 3
        lat = 1.0 + g @ np.arange(1, 7) / 10
        return acc, lat, 1.0 + g.sum(axis=1) / 20, None

    budgets = Budgets(latency_ms=2.5)
    args = dict(seed=3, pop_size=10, generations=6)
    full = run_search(Space(), objectives, budgets, NsgaSettings(checkpoint=tmp_path / "full.json", **args))
    for stop in range(1, 6):  # a run killed after generation `stop`, then resumed
        path = tmp_path / f"cut{stop}.json"
        run_search(
            Space(), objectives, budgets, NsgaSettings(checkpoint=path, **{**args, "generations": stop})
        )
        resumed = run_search(Space(), objectives, budgets, NsgaSettings(checkpoint=path, resume=True, **args))
        assert resumed.resumed_from == stop
        assert [c.genome for c in resumed.front] == [c.genome for c in full.front]
        assert sorted(map(tuple, (c.genome for c in resumed.evaluated))) == sorted(
            map(tuple, (c.genome for c in full.evaluated))
        )


# ---------------------------------------------------------------------------------------------------------
# whole compiles: SIGKILL at several points, then --resume; two compiles at once on one cache

SMALL = ["--samples", "24", "--population", "10", "--generations", "3", "--seed", "1", "--budget", "5x"]


@pytest.fixture(scope="module")
def compile_case(tmp_path_factory, test_models):
    root = tmp_path_factory.mktemp("interrupt")
    data = root / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((40, 1, 28, 28)).astype(np.float32), y=rng.integers(0, 10, 40))
    return root, data, test_models["dense_head"]


def _args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["compile", str(model), "--data", str(data), "--metric", "agreement", *SMALL, *extra]


def _hanasc(args: list[str]) -> subprocess.Popen:
    """``hanasc`` on the user's cache (shared with the other tests: the cross-built aarch64 runtime,
    the profile store); runs are told apart by their model path (part of the run key)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hanasc.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(out: Path) -> tuple:
    report = json.loads((out / "report.json").read_text())
    return (
        json.loads((out / "config.json").read_text()),
        report["pareto"],
        report["result"]["accuracy"]["value"],
    )


def _store_ok() -> bool:
    from hanasc.cost_models.store import default_db_path

    return sqlite3.connect(default_db_path()).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_compile_killed_at_six_points_resumes_to_the_same_result(compile_case):
    """cortex-a78: every figure is predicted, so an uninterrupted run and a killed-and-resumed one must
    agree exactly (on the host, latencies measured before the search differ from run to run)."""
    root, data, model = compile_case
    reference_model, killed_model = root / "reference.onnx", root / "killed.onnx"
    reference_model.write_bytes(model.read_bytes())
    killed_model.write_bytes(model.read_bytes())
    started = time.perf_counter()
    reference = _hanasc(_args(reference_model, data, "--target", "cortex-a78", "--out", str(root / "ref")))
    _, err = reference.communicate(timeout=900)
    assert reference.returncode == 0, err
    total = time.perf_counter() - started
    out = root / "killed-out"
    for fraction in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
        run = _hanasc(_args(killed_model, data, "--target", "cortex-a78", "--out", str(out), "--resume"))
        time.sleep(total * fraction)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
        run.wait(60)
        assert not out.exists() or (out / "report.json").is_file()  # never half-written
    final = _hanasc(_args(killed_model, data, "--target", "cortex-a78", "--out", str(out), "--resume"))
    _, err = final.communicate(timeout=900)
    assert final.returncode == 0, err
    assert "Traceback" not in err
    assert _result(out) == _result(root / "ref")
    assert not [p for p in root.iterdir() if p.name.startswith(".killed-out.")]  # killed writers' folders
    assert _store_ok()


@pytest.mark.slow
def test_two_compiles_at_once_share_the_cache(compile_case):
    root, data, model = compile_case
    shared = root / "shared.onnx"
    shared.write_bytes(model.read_bytes())
    runs = [
        _hanasc(_args(shared, data, "--out", str(root / "a"))),
        _hanasc(_args(shared, data, "--out", str(root / "b"))),  # the same run: waits for the first's lock
        _hanasc(
            [*_args(shared, data, "--out", str(root / "c"))[:-2], "--seed", "2", "--out", str(root / "c")]
        ),
    ]
    errors = [run.communicate(timeout=1200)[1] for run in runs]
    for run, err in zip(runs, errors, strict=True):
        assert run.returncode == 0, err
        assert "Traceback" not in err
    assert any("in use by another hanasc process" in err for err in errors[:2])
    for out in ("a", "b", "c"):
        assert {"report.json", "config.json", "model.so"} <= {p.name for p in (root / out).iterdir()}
    assert _store_ok()


def test_output_folder_left_by_a_killed_writer_is_cleaned(tmp_path):
    from hanasc.core.atomic import atomic_dir

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leftover = tmp_path / f".out.{int(dead.stdout)}.abcd.tmp"
    leftover.mkdir()
    mine = tmp_path / f".out.{os.getpid()}.efgh.tmp"  # a live writer's folder is left alone
    mine.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert not leftover.exists() and mine.exists() and (tmp_path / "out" / "f").is_file()


def test_ctrl_c_ends_in_one_line_and_writes_nothing(compile_case, tmp_path):
    """SIGINT during a compile: exit 130, one line on stderr (no "Aborted!", no traceback), no output."""
    _, data, model = compile_case
    copy = tmp_path / "ctrl-c.onnx"
    copy.write_bytes(model.read_bytes())
    out = tmp_path / "out"
    # a search long enough that the signal lands inside it on any machine (the small one ends in ~5 s on a
    # fast CPU), sent once the run has said it reached the search (stage lines go to stdout)
    run = _hanasc(_args(copy, data, "--out", str(out), "--samples", "400", "--generations", "400"))
    while "search space" not in (line := run.stdout.readline()):
        assert line, "the compile ended before its search"
    time.sleep(0.5)
    assert run.poll() is None
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("hanasc: interrupted (Ctrl-C)")
    assert "Traceback" not in err and "Aborted!" not in err
    assert not out.exists()
