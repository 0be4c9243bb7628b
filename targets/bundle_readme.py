"""The README.md that travels with a device bundle: what is in it and how to run it on the device."""

from __future__ import annotations

from hanasc.targets.bundle import TensorSpec, tensor_specs

_RUNNER_USAGE = """\
Inputs are raw little-endian float32 in C order; `--input FILE:SHAPE` may be repeated. The runner writes
the outputs ({outputs}) back to back as raw bytes to `--output`, prints each output's dtype
and shape, and a line `latency_ms median=... min=... max=... runs=N device=...` (the median over N
timed runs after warm-up runs, each run one call of `main`).
"""


def runner_command(manifest: dict, extra: str = "") -> str:
    """The C++ runner's command line for the bundle's probe input."""
    inputs = tensor_specs(manifest["inputs"])
    args = " ".join(f"--input {s.file}:{s.shape_arg}" for s in inputs)
    return f"./runner ./model.so {args} --output out.bin --runs 50{extra}"


def _outputs(manifest: dict) -> str:
    specs: list[TensorSpec] = tensor_specs(manifest["outputs"])
    return ", ".join(f"{s.dtype} {s.shape_arg}" for s in specs)


def render(
    manifest: dict,
    device_setup: list[str],
    command: str | None = None,
    notes: list[str] | None = None,
    runner_usage: bool = True,
) -> str:
    """README text for a bundle whose manifest is ``manifest``; ``command`` replaces the C++ runner's line."""
    files = "\n".join(f"| `{name}` | {what} |" for name, what in manifest["contents"].items())
    setup = "\n".join(f"{i}. {step}" for i, step in enumerate(device_setup, 1))
    lines = [
        f"# hanasc bundle for `{manifest['target']}`",
        "",
        f"Built by hanasc with TVM {manifest['tvm_version']} for the TVM target",
        "",
        f"    {manifest['tvm_target']}",
        "",
        "| file | what |",
        "|---|---|",
        files,
        "",
        "## Run it on the device",
        "",
        setup,
        "",
        "Then, in this folder:",
        "",
        f"    {command or runner_command(manifest)}",
        "",
    ]
    if runner_usage:
        lines += [*_RUNNER_USAGE.format(outputs=_outputs(manifest)).splitlines(), ""]
    lines += [
        "## Check the numbers",
        "",
        "`probe_output.bin` holds the host (x86 LLVM) build's output for `probe_input.bin`; compare it",
        "with `out.bin` from the command above, e.g. in numpy:",
        "",
        "    import numpy as np",
        "    a, b = np.fromfile('out.bin', np.float32), np.fromfile('probe_output.bin', np.float32)",
        "    print(abs(a - b).max())",
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
