"""The channel spaces of the channel-coupling analysis (:mod:`hanasc.passes.channel_groups`): which
parameter axes carry a space's channels (:class:`ParamSlice`), where a tensor's channels sit
(:class:`Track`), a weight seen through reshapes and permutes (:class:`View`), and the union-find that
joins spaces coupled by residual adds and squeeze-excite products (:class:`ChannelSpaces`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParamSlice:
    """One weight parameter axis that carries a group's channels (``block`` entries per channel)."""

    param: str
    axis: int
    role: str  # "producer" | "depthwise" | "per_channel" | "consumer"
    block: int = 1

    def indices(self, kept) -> list[int]:
        """Entries of the axis to keep for the kept channel indices."""
        return [c * self.block + j for c in kept for j in range(self.block)]


@dataclass(frozen=True)
class Track:
    space: int
    axis: int
    block: int = 1


@dataclass(frozen=True)
class View:
    """A weight parameter, maybe reshaped (size-1 axes only) or permuted; axis_map[view axis] = param axis."""

    param: str
    axis_map: tuple[int | None, ...]
    reshapes: tuple = ()  # (reshape Call, its axis_map) steps to rewrite

    def shape_axis(self, param_axis: int) -> list[tuple[object, int]]:
        return [(call, amap.index(param_axis)) for call, amap in self.reshapes]


@dataclass
class Space:
    channels: int
    producers: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    slices: list[ParamSlice] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    depthwise_calls: list = field(default_factory=list)
    reshape_calls: list = field(default_factory=list)
    tir_calls: list = field(default_factory=list)

    def absorb(self, other: Space) -> None:
        for name in ("producers", "depthwise", "consumers", "slices", "reasons"):
            mine = getattr(self, name)
            mine.extend(x for x in getattr(other, name) if x not in mine)
        self.depthwise_calls += other.depthwise_calls
        self.reshape_calls += other.reshape_calls
        self.tir_calls += other.tir_calls


class ChannelSpaces:
    """Union-find over channel spaces: joined spaces absorb each other's layers, slices and reasons."""

    def __init__(self) -> None:
        self.spaces: list[Space] = []
        self.parent: list[int] = []

    def new_space(self, channels: int) -> int:
        self.spaces.append(Space(channels))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def space(self, t: Track) -> Space:
        return self.spaces[self.find(t.space)]

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            a, b = min(a, b), max(a, b)
            self.parent[b] = a
            self.spaces[a].absorb(self.spaces[b])
