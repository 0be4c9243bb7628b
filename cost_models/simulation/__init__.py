"""Simulated latency of a shipped artifact: qemu-user block counts x llvm-mca cycles (docs/costs.md)."""
