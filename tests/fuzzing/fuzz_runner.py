"""Fuzz the ONNX boundary: run ``hanasc`` on each mutant (:mod:`fuzzing.onnx_fuzz`) in a worker under a
timeout.

Each mutant goes through ``hanasc inspect``; a sample of those it accepts also goes through ``hanasc apply``
(empty Config) and ``hanasc compile`` (host, tiny search). Every call ends in exactly one outcome:

- ``ok``: exit 0;
- ``rejected``: exit 2 and exactly one line on stderr, ``hanasc: error: ...``, naming a file or an option;
- ``traceback``: an exception escaped the CLI (a real process would print a Python traceback);
- ``hang``: the call ran past its time limit (the worker is killed and replaced);
- ``partial``: the call failed but left something at ``--out`` (or a temporary folder beside it);
- ``other``: anything else (another exit code, a rejection of more than one line, a worker killed by
  a signal).

The CLI runs in a worker process (TVM is imported once, not once per call) whose stdout and stderr are
captured at the file-descriptor level, so C++ log lines count against the one-line rule as a user would
see them. ``bench/fuzz.py`` prints the table; ``tests/test_fuzz.py`` runs a fixed-seed sample.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from fuzzing.onnx_fuzz import Mutant, make_mutant

OUTCOMES = ("ok", "rejected", "traceback", "hang", "partial", "other")
COMMANDS = ("inspect", "apply", "compile")

# ------------------------------------------------------------------------------------------ CLI worker


@dataclass
class CallResult:
    """What one CLI call did."""

    exit_code: int | None  # None: killed (timeout or signal)
    stderr: str
    error: str = ""  # the escaped exception, formatted, when there was one
    seconds: float = 0.0
    timed_out: bool = False


def _capture_call(argv: list[str]) -> tuple[int, str, str]:
    """Run ``hanasc.cli.main`` with ``argv``; stdout/stderr captured at the fd level, as a user sees them."""
    import tempfile

    from hanasc import cli

    sys.stdout.flush()
    sys.stderr.flush()
    err_file, out_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (fds dup'ed)
    saved_err, saved_out = os.dup(2), os.dup(1)
    os.dup2(err_file.fileno(), 2)
    os.dup2(out_file.fileno(), 1)
    py_err, py_out = io.StringIO(), io.StringIO()
    old = sys.argv, sys.stdout, sys.stderr
    sys.argv, sys.stdout, sys.stderr = ["hanasc", *argv], py_out, py_err
    code, error = 0, ""
    try:
        cli.main()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            py_err.write(f"{exc.code}\n")
            code = 1
    except BaseException:  # what would escape to the interpreter: a traceback
        error = traceback.format_exc()
        code = 1
    finally:
        sys.argv, sys.stdout, sys.stderr = old
        os.dup2(saved_err, 2)
        os.dup2(saved_out, 1)
        os.close(saved_err)
        os.close(saved_out)
    err_file.seek(0)
    fd_err = err_file.read().decode(errors="replace")
    err_file.close()
    out_file.close()
    return code, py_err.getvalue() + fd_err, error


def _worker_main(conn, memory_limit: int | None, env: dict[str, str]) -> None:
    os.setsid()  # its own process group: a hang is ended with everything it started
    os.environ.update(env)
    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    import tvm.relax  # noqa: F401

    import hanasc.cli  # noqa: F401  (imports TVM and friends once)

    conn.send("ready")
    while True:
        argv = conn.recv()
        if argv is None:
            return
        start = time.monotonic()
        code, stderr, error = _capture_call(argv)
        conn.send((code, stderr, error, time.monotonic() - start))


class CliWorker:
    """A process that runs ``hanasc`` commands in-process; replaced when a call hangs or kills it."""

    def __init__(self, memory_limit: int | None = 12 << 30, env: dict[str, str] | None = None) -> None:
        self.memory_limit, self.env = memory_limit, dict(env or {})
        self.proc, self.conn, self.calls = None, None, 0

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.memory_limit, self.env), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError("hanasc fuzz worker did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.join(timeout=10)
        self.proc, self.conn, self.calls = None, None, 0

    def run(self, argv: list[str], timeout: float) -> CallResult:
        if self.proc is None or not self.proc.is_alive() or self.calls >= 150:
            self.stop()
            self._start()
        self.calls += 1
        start = time.monotonic()
        self.conn.send(argv)
        try:
            ready = self.conn.poll(timeout)
            message = self.conn.recv() if ready else None
        except (EOFError, OSError):
            ready, message = True, None
        if message is None:
            killed_by = self.proc.exitcode
            self.stop()
            seconds = time.monotonic() - start
            if not ready:
                return CallResult(None, "", seconds=seconds, timed_out=True)
            return CallResult(None, "", error=f"worker died (exit code {killed_by})", seconds=seconds)
        code, stderr, error, seconds = message
        return CallResult(code, stderr, error, seconds)


# --------------------------------------------------------------------------------------------- outcomes


def _left_behind(out: Path | None) -> list[str]:
    if out is None:
        return []
    left = [str(out)] if out.exists() else []
    return left + [str(p) for p in out.parent.glob(f".{out.name}.*")]


def classify(result: CallResult, out: Path | None, names: list[str]) -> tuple[str, str]:
    """The outcome of one call and a one-line note (the error line, the exception, what was left)."""
    if result.error and result.exit_code is not None:
        return "traceback", result.error.strip().splitlines()[-1]
    if "Traceback (most recent call last)" in result.stderr or "hanasc: internal error" in result.stderr:
        return "traceback", result.stderr.strip().splitlines()[-1]
    if result.timed_out:
        return "hang", f"no answer within the time limit ({result.seconds:.0f} s)"
    if result.exit_code is None:
        return "other", result.error
    if result.exit_code == 0:
        return "ok", ""
    left = _left_behind(out)
    if left:
        return "partial", f"left behind after exit {result.exit_code}: {', '.join(left)}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("hanasc: error: "):
        if any(n in lines[0] for n in names) or "--" in lines[0]:
            return "rejected", lines[0]
        return "other", f"rejection names no file or option: {lines[0]}"
    shown = " | ".join(lines[:3])
    return "other", f"exit {result.exit_code}, {len(lines)} stderr lines: {shown[:300]}"


@dataclass
class FuzzReport:
    """Counts per command and outcome, and the calls that were not ok or rejected."""

    mutants: int = 0
    seconds: float = 0.0
    counts: dict[str, Counter] = field(default_factory=lambda: {c: Counter() for c in COMMANDS})
    failures: list[dict] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # a rejection line per mutator

    def record(self, command: str, mutant: Mutant, outcome: str, note: str) -> None:
        self.counts[command][outcome] += 1
        if outcome == "rejected":
            self.rejections[mutant.mutator] += 1
            self.examples.setdefault(mutant.mutator, f"{mutant.detail} -> {note}")
        if outcome not in ("ok", "rejected"):
            self.failures.append(
                {
                    "command": command,
                    "outcome": outcome,
                    "fixture": mutant.fixture,
                    "mutator": mutant.mutator,
                    "mutation": mutant.detail,
                    "note": note,
                    "path": str(mutant.path),
                }
            )

    def bad(self) -> int:
        return sum(self.counts[c][o] for c in COMMANDS for o in ("traceback", "hang", "partial", "other"))

    def table(self) -> str:
        lines = [
            "| command | calls | " + " | ".join(OUTCOMES) + " |",
            "|---|---:|" + "---:|" * len(OUTCOMES),
        ]
        for command in COMMANDS:
            counts = self.counts[command]
            row = " | ".join(str(counts[o]) for o in OUTCOMES)
            lines.append(f"| {command} | {sum(counts.values())} | {row} |")
        total = Counter()
        for command in COMMANDS:
            total.update(self.counts[command])
        lines.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
        return "\n".join(lines)


def _write_data(path: Path, shape: tuple[int, ...], classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *shape[1:])).astype(np.float32)
    np.savez(path, x=x, y=np.arange(8) % classes)


@dataclass
class FuzzCalls:
    """Which CLI calls each mutant gets: inspect always (``timeout`` seconds; apply gets twice and compile
    four times as long), apply / compile on every n-th mutant inspect accepts. Mutants that end ok or
    rejected are deleted unless ``keep``."""

    timeout: float = 30.0
    apply_every: int = 5
    compile_every: int = 25
    keep: bool = False


def run_fuzz(
    fixtures: dict[str, onnx.ModelProto],
    count: int,
    seed: int,
    workdir: Path,
    calls: FuzzCalls | None = None,
    progress: Callable[[int, FuzzReport], None] | None = None,
) -> FuzzReport:
    """Make ``count`` mutants and run the CLI on each as ``calls`` says; mutants that end neither ok nor
    rejected stay in ``workdir`` for a look."""
    calls = calls or FuzzCalls()
    timeout, apply_every, compile_every, keep = (
        calls.timeout,
        calls.apply_every,
        calls.compile_every,
        calls.keep,
    )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"HANASC_CACHE": str(workdir / "cache"), "HANASC_DEBUG": "1"}  # DEBUG: escaped errors raise
    (workdir / "empty.json").write_text("{}\n")
    rng = random.Random(seed)
    report = FuzzReport()
    worker = CliWorker(env=env)
    accepted = 0
    start = time.monotonic()
    names = sorted(fixtures)
    try:
        for index in range(count):
            fixture = names[index % len(names)]
            folder = workdir / f"m{index:05d}"
            shutil.rmtree(folder, ignore_errors=True)
            mutant, extra = make_mutant(random.Random(rng.random()), fixture, fixtures[fixture], folder)
            report.mutants += 1
            file_names = [mutant.path.name, "--input-shape"]
            result = worker.run(["inspect", str(mutant.path), "--json", *extra], timeout)
            outcome, note = classify(result, None, file_names)
            report.record("inspect", mutant, outcome, note)
            clean = outcome in ("ok", "rejected")
            if outcome == "ok":
                accepted += 1
                if accepted % apply_every == 1 or apply_every == 1:
                    out = folder / "apply_out"
                    args = ["apply", str(mutant.path), str(workdir / "empty.json"), "--out", str(out)]
                    result = worker.run([*args, *extra], 2 * timeout)
                    outcome, note = classify(result, None if result.exit_code == 0 else out, file_names)
                    report.record("apply", mutant, outcome, note)
                    clean = clean and outcome in ("ok", "rejected")
                if accepted % compile_every == 1 or compile_every == 1:
                    data = folder / "data.npz"
                    _write_data(data, mutant.input_shape)
                    out = folder / "compile_out"
                    args = ["compile", str(mutant.path), "--target", "host", "--data", str(data)]
                    args += ["--out", str(out), "--generations", "1", "--population", "4", "--samples", "4"]
                    args += ["--budget", "1000ms", "--max-loss", "100"]
                    result = worker.run([*args, *extra], 4 * timeout)
                    outcome, note = classify(
                        result, None if result.exit_code == 0 else out, [*file_names, data.name]
                    )
                    report.record("compile", mutant, outcome, note)
                    clean = clean and outcome in ("ok", "rejected")
            if clean and not keep:
                shutil.rmtree(folder, ignore_errors=True)
            if progress:
                progress(index + 1, report)
    finally:
        worker.stop()
        report.seconds = time.monotonic() - start
    return report


def report_json(report: FuzzReport, count: int, seed: int) -> str:
    """The report as JSON (counts and failures)."""
    return json.dumps(
        {
            "count": count,
            "seed": seed,
            "seconds": round(report.seconds, 1),
            "counts": {c: dict(report.counts[c]) for c in COMMANDS},
            "rejections_by_mutator": dict(report.rejections),
            "rejection_examples": report.examples,
            "failures": report.failures,
        },
        indent=2,
    )
