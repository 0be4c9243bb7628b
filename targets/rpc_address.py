"""The one RPC address type: where a device's TVM RPC server (or a tracker that knows it) listens.

``--rpc`` takes ``host:port`` (an RPC server, ``python -m tvm.exec.rpc_server`` on the board) or
``key@host:port`` (an RPC tracker and the key the device registered under). Profiling, measurement and
tuning all parse it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hanasc.core.errors import HanascError


class RpcAddressError(HanascError):
    """An ``--rpc`` value that is not ``host:port`` or ``key@host:port``."""


@dataclass(frozen=True)
class RpcAddress:
    host: str
    port: int
    key: str | None = None  # tracker key; None: an RPC server directly

    @classmethod
    def parse(cls, spec: str, option: str = "--rpc") -> RpcAddress:
        match = re.fullmatch(r"(?:([^@\s]+)@)?([^:@\s]+|\[[0-9a-fA-F:]+\]):(\d+)", spec.strip())
        if not match or not 0 < int(match[3]) < 65536:
            raise RpcAddressError(
                f"{option} '{spec}': expected host:port (an RPC server) or key@tracker-host:port"
            )
        key, host, port = match.groups()
        return cls(host=host.strip("[]"), port=int(port), key=key)

    @property
    def via_tracker(self) -> bool:
        return self.key is not None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.key}@{host}:{self.port}" if self.key else f"{host}:{self.port}"
