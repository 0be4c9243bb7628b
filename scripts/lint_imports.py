"""Check the layers contract in pyproject.toml ([tool.importlinter]) with import-linter.

import-linter reads a package from one folder, and hanasc spans four (toolchain/, passes/, targets/,
cost_models/, mapped by ``[tool.setuptools.package-dir]``): this script copies them into one ``hanasc``
tree in a temporary folder, puts it first on PYTHONPATH and runs ``lint-imports`` on it. Exit code is
lint-imports' own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def assemble(into: Path) -> Path:
    """Copy the package folders into ``into/hanasc`` as setuptools maps them; the tree's root."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        shutil.copytree(ROOT / folder, into / package.replace(".", "/"), ignore=ignore, dirs_exist_ok=True)
    return into


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hanasc-lint-") as tmp:
        tree = assemble(Path(tmp))
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        lint = Path(sys.executable).parent / "lint-imports"
        command = [str(lint) if lint.exists() else "lint-imports", str(ROOT / "pyproject.toml")]
        return subprocess.run([*command, *sys.argv[1:]], env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
