"""The ``hanasc`` command line, a thin layer over the Python API (:mod:`hanasc.api`): each command parses
its options, calls the API and prints the result. The Typer app and its entry point :func:`main`
(:mod:`~hanasc.cli.app`), the options and console the commands share (:mod:`~hanasc.cli.common`), the
cost-model commands (:mod:`~hanasc.cli.costs_command`), ``compile`` and ``demo``
(:mod:`~hanasc.cli.compile_command`), and the views of ``inspect`` and ``targets``."""

from __future__ import annotations

from hanasc.cli.app import app, main

__all__ = ["app", "main"]
