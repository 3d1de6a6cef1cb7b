"""Primacy: which upstream controllers a miss goes to, and whose answer wins.

The patent's proxy asks several controllers and decides "which of the matching rules should have
primacy ... based on traffic levels of the network, time of day or a controller priority". Here:

- Eligibility: a controller with a `scope` only hears about misses its scope matches.
- Primacy: a controller *has primacy* while it is inside its `hours` (local time; none means
  always) and below its `max_packet_in_rate` (misses sent to it per second; none means no
  limit). Among the controllers that answered a miss, one with primacy beats one without, then
  the higher `priority` wins, then the one listed first in the config. The order is total, so
  the same answers always give the same winner.

Pure logic: time comes in as arguments (`now` monotonic seconds for rates, `local_time` for
hours), so tests and the northbound sessions drive it with whatever clock they like.
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import ControllerConfig, TimeWindow
from .rules.model import Match

RATE_WINDOW_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    priority: int
    order: int  # position in the config file: the last tie-break
    hours: tuple[TimeWindow, ...] = ()
    max_packet_in_rate: float | None = None
    scope: Match | None = None

    @classmethod
    def from_config(cls, controller: ControllerConfig, order: int) -> Policy:
        primacy = controller.primacy
        if primacy is None:
            return cls(controller.name, controller.priority, order)
        return cls(controller.name, controller.priority, order, primacy.hours,
                   primacy.max_packet_in_rate, primacy.scope)

    def in_hours(self, local_time: datetime.time) -> bool:
        return not self.hours or any(window.contains(local_time) for window in self.hours)


def _in_scope(scope: Match | None, key: int) -> bool:
    return scope is None or scope.matches(key)


class _RateMeter:
    """Misses sent in the last RATE_WINDOW_SECONDS (a sliding window of timestamps)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def record(self, now: float) -> None:
        self._times.append(now)
        self._expire(now)

    def rate(self, now: float) -> float:
        self._expire(now)
        return len(self._times) / RATE_WINDOW_SECONDS

    def _expire(self, now: float) -> None:
        times = self._times
        while times and times[0] <= now - RATE_WINDOW_SECONDS:
            times.popleft()


class Arbiter:
    def __init__(self, policies: Sequence[Policy]) -> None:
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise ValueError("controller names must be unique")
        self.policies = {p.name: p for p in policies}
        self._meters = {p.name: _RateMeter() for p in policies}
        self._ranked = sorted(policies, key=lambda p: (-p.priority, p.order))  # by static rank

    @classmethod
    def from_config(cls, controllers: Iterable[ControllerConfig]) -> Arbiter:
        return cls([Policy.from_config(c, i) for i, c in enumerate(controllers)])

    def eligible(self, key: int, available: Iterable[str] | None = None) -> list[str]:
        """Controllers a miss with this packed key goes to, best-ranked by static priority first.
        `available` limits the choice to controllers that are connected right now."""
        wanted = self.policies.keys() if available is None else set(available)
        return [p.name for p in self._ranked if p.name in wanted and _in_scope(p.scope, key)]

    def record_packet_in(self, name: str, now: float) -> None:
        """Count a miss sent to `name` (feeds max_packet_in_rate)."""
        self._meters[name].record(now)

    def packet_in_rate(self, name: str, now: float) -> float:
        return self._meters[name].rate(now)

    def has_primacy(self, name: str, now: float, local_time: datetime.time) -> bool:
        policy = self.policies[name]
        if not policy.in_hours(local_time):
            return False
        limit = policy.max_packet_in_rate
        return limit is None or self._meters[name].rate(now) <= limit

    def winner(self, answered: Iterable[str], now: float,
               local_time: datetime.time) -> str | None:
        """The controller whose answer is applied, among those that answered; None if none did."""
        candidates = [self.policies[n] for n in answered if n in self.policies]
        if not candidates:
            return None
        best = max(candidates, key=lambda p: (self.has_primacy(p.name, now, local_time),
                                              p.priority, -p.order))
        return best.name
