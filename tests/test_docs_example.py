"""The embedding example of docs/passes.md runs (on a small model with the same layer roles)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).parent.parent / "docs" / "passes.md"


def test_embedding_example_runs(test_models):
    code = re.search(r"## Embedding hanasc passes.*?```python\n(.*?)```", DOC.read_text(), re.S)[1]
    code = code.replace('"model.onnx"', repr(str(test_models["inverted_residual"])))
    code = code.replace('"conv1"', '"stem.stem.0"').replace('"conv2"', '"block.block.0"')
    code = code.replace(
        "LayerChoice(width=0.5)}", 'LayerChoice(width=0.5), "block.block.3": LayerChoice(width=0.5)}'
    )
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    from hanasc.targets import host

    out = host.run(scope["executable"], [np.zeros((1, 3, 32, 32), np.float32)])
    assert out[0].shape == (1, 16, 32, 32)
