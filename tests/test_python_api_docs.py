"""docs/python-api.md's examples are a test: its ```python blocks run in order, in a fresh folder, as a
user would paste them (a tiny model built with onnx.helper, a compile with tiny search options)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_page_has_examples_of_every_function():
    code = "\n".join(python_blocks(DOC.read_text()))
    for call in ("hanasc.inspect(", "hanasc.compile(", "hanasc.apply(", "hanasc.costs("):
        assert call in code, call


def test_the_examples_run(tmp_path):
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(python_blocks(DOC.read_text())))
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HANASC_CACHE": str(tmp_path / "cache")},
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "['conv1', 'conv2', 'fc']" in run.stdout
    assert "--space everything: joint, arch or quant" in run.stdout
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "replay" / "model.so").is_file()
