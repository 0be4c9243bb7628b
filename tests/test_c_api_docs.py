"""docs/getting-started.md, "Deploy it in your C/C++ app": its shell blocks, run as written (a tiny model as
model.onnx, the example app beside it as in a checkout); the host and the qemu-run aarch64 build print the
same top 5."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_c_api import EXAMPLE, top5_lines

PAGE = Path(__file__).resolve().parent.parent / "docs" / "getting-started.md"
SECTION = "## Deploy it in your C/C++ app"


def deploy_blocks() -> list[str]:
    """The ```bash blocks of the page's deploy section, in order."""
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_section_has_the_host_and_the_cross_steps():
    blocks = deploy_blocks()
    assert len(blocks) == 2
    assert "--target host" in blocks[0] and "c-app-static" in blocks[0]
    assert "--target cortex-a78" in blocks[1] and "qemu-aarch64" in blocks[1]


@pytest.mark.slow
def test_following_the_deploy_section_step_by_step(test_models, tmp_path):
    shutil.copy2(test_models["dense_head"], tmp_path / "model.onnx")
    shutil.copytree(EXAMPLE, tmp_path / "examples" / "c-app")
    printed = []
    for block in deploy_blocks():
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        printed.append(top5_lines(done.stdout))
    host, arm = printed
    assert len(host) == 5 and host == arm
    assert (tmp_path / "deploy" / "host.tar.gz").is_file()
    assert (tmp_path / "deploy-a78" / "cortex-a78" / "lib" / "libhanasc_model.a").is_file()
