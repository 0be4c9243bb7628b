"""What the ``hanasc`` commands share: the ``--input-shape`` option, a console, Ctrl-C handling."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

InputShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", "-s", help="Fix an input's shape: NAME=1x3x224x224 (repeatable)."),
]


def console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables when the output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=200)


class Interrupted(BaseException):
    """Ctrl-C, raised instead of ``KeyboardInterrupt`` so that it passes click (which would print a bare
    "Aborted!") and ends in one line from :func:`hanasc.cli.main`; ``finally`` blocks and context managers
    (locks, temporary output folders) still run."""


class InterruptWatch:
    """The CLI's SIGINT handler: it raises :class:`Interrupted` and remembers the signal, because a Ctrl-C
    that lands inside TVM comes back as TVM's own error, which a fallback (another layout, another build
    plan) may catch; :func:`raise_if_interrupted` at the next progress tick stops the run then."""

    def __init__(self) -> None:
        self.received = False

    def handler(self, _signum, _frame) -> None:
        self.received = True
        raise Interrupted()


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if the installed SIGINT handler (an :class:`InterruptWatch`) saw Ctrl-C."""
    import signal

    watch = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    if isinstance(watch, InterruptWatch) and watch.received:
        raise Interrupted()
