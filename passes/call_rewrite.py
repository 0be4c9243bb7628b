"""The base of the passes that rewrite the calls of one Relax operator as a per-layer Config says."""

from __future__ import annotations

from typing import ClassVar

from tvm.relax.dpl import is_op, wildcard

from hanasc.passes.config import Config


class CallRewrite:
    """``config``: the policy; ``pattern``: every two-operand call of :attr:`op` (``conv2d(data, weight)``,
    ``add(lhs, rhs)``), for ``rewrite_call``. A subclass sets :attr:`op`, implements ``transform_function``
    and is decorated with ``relax.transform.function_pass``."""

    op: ClassVar[str] = ""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pattern = is_op(self.op)(wildcard(), wildcard())
