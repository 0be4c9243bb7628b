"""ONNX fuzzing: a fixed-seed sample of mutants through the CLI ends in ok or a one-line rejection, always."""

from __future__ import annotations

import random

import onnx
import pytest
from fuzzing.fuzz_fixtures import builtin_fixtures
from fuzzing.fuzz_runner import CallResult, CliWorker, FuzzCalls, classify, run_fuzz
from fuzzing.onnx_fuzz import MUTATORS, make_mutant


def test_fixtures_are_valid_and_cover_residual_depthwise_dense():
    fixtures = builtin_fixtures()
    residual = fixtures["residual"]
    onnx.checker.check_model(residual, full_check=True)
    onnx.checker.check_model(fixtures["plain"], full_check=True)
    ops = {n.op_type for n in residual.graph.node}
    assert {"Add", "Gemm", "Conv"} <= ops
    groups = [a.i for n in residual.graph.node for a in n.attribute if a.name == "group"]
    assert groups == [8]  # the depthwise conv


def test_every_mutator_writes_a_model(tmp_path):
    model = builtin_fixtures()["residual"]
    for i, mutator in enumerate(MUTATORS):
        mutant, extra = make_mutant(random.Random(i), "residual", model, tmp_path / mutator, mutator)
        assert mutant.path.is_file() and mutant.detail, mutator
        assert mutant.mutator == mutator
        assert extra == [] or extra[0] == "--input-shape"


def test_classify_outcomes(tmp_path):
    names = ["model.onnx"]
    assert classify(CallResult(0, ""), None, names)[0] == "ok"
    good = CallResult(2, "hanasc: error: model.onnx: opset 99 is not supported\n")
    assert classify(good, None, names) == ("rejected", good.stderr.strip())
    two_lines = CallResult(2, "Error converting operator Conv\nhanasc: error: model.onnx: bad\n")
    assert classify(two_lines, None, names)[0] == "other"
    assert classify(CallResult(2, "hanasc: error: something\n"), None, names)[0] == "other"  # names nothing
    assert classify(CallResult(1, "", error="Traceback...\nKeyError: 0"), None, names)[0] == "traceback"
    assert classify(CallResult(None, "", timed_out=True, seconds=9), None, names)[0] == "hang"
    out = tmp_path / "out"
    out.mkdir()
    assert classify(good, out, names)[0] == "partial"
    out.rmdir()
    (tmp_path / ".out.abc.tmp").mkdir()
    assert classify(good, out, names)[0] == "partial"


def test_worker_reports_hang_and_recovers(tmp_path):
    worker = CliWorker(env={"HANASC_CACHE": str(tmp_path)})
    try:
        result = worker.run(["--help"], timeout=120)
        assert result.exit_code == 0
        hung = worker.run(["models", "list"], timeout=0.001)
        assert hung.timed_out and hung.exit_code is None
        again = worker.run(["inspect", str(tmp_path / "nope.onnx")], timeout=120)
        assert again.exit_code == 2 and again.stderr.count("\n") == 1, again.stderr
    finally:
        worker.stop()


def _assert_clean(report) -> None:
    bad = [f"{f['command']} {f['outcome']}: {f['mutation']}: {f['note']}" for f in report.failures]
    assert report.bad() == 0, "\n".join(bad)


def test_fuzz_fixed_seed_sample_of_100(tmp_path):
    """100 mutants through inspect; every 10th accepted one through apply, the first through compile."""
    report = run_fuzz(
        builtin_fixtures(),
        100,
        seed=15,
        workdir=tmp_path,
        calls=FuzzCalls(60, apply_every=10, compile_every=1000),
    )
    assert report.mutants == 100
    assert sum(report.counts["inspect"].values()) == 100
    assert report.counts["inspect"]["rejected"] > 30  # the mutations really reach the validation
    assert sum(report.counts["compile"].values()) == 1
    _assert_clean(report)


@pytest.mark.slow
def test_fuzz_300_with_apply_and_compile(tmp_path):
    """Another seed, more apply and compile calls (bench/fuzz.py runs 1,000 and more)."""
    report = run_fuzz(
        builtin_fixtures(),
        300,
        seed=7,
        workdir=tmp_path,
        calls=FuzzCalls(60, apply_every=5, compile_every=25),
    )
    assert report.mutants == 300
    assert sum(report.counts["compile"].values()) >= 1
    _assert_clean(report)
