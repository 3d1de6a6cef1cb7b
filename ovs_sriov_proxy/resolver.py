"""Miss resolution across controllers: the patent's method, as pure logic.

A miss the proxy's rules cannot answer is sent as a PACKET_IN to every eligible controller, under
a buffer id that the proxy owns (`open`), so that each controller's answer — a PACKET_OUT or a
FLOW_MOD carrying that buffer id — can be tied to the miss (`answer`). The miss is resolved as
soon as the controller that would win among all those asked has answered (nobody else could beat
it), or when `miss_timeout` has passed, with whatever answers came (`expire`). The arbiter picks
the winner; only the winner's answer is applied, and the caller stores it as a learned rule.

No I/O and no clock: `now` (monotonic seconds) and `local_time` come in as arguments.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .arbiter import Arbiter

NO_BUFFER = 0xFFFFFFFF
BridgeRef = TypeVar("BridgeRef")  # whatever the caller uses to name a bridge
AnswerT = TypeVar("AnswerT")  # whatever the caller keeps of an answer (a decoded PACKET_OUT...)


@dataclass(slots=True)
class PendingMiss(Generic[BridgeRef, AnswerT]):
    buffer_id: int
    bridge: BridgeRef
    in_port: int
    data: bytes
    key: int
    asked: tuple[str, ...]
    deadline: float
    answers: dict[str, AnswerT] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolution(Generic[BridgeRef, AnswerT]):
    miss: PendingMiss[BridgeRef, AnswerT]
    winner: str | None  # None: nobody answered in time (the caller applies its fallback)
    answer: AnswerT | None
    timed_out: bool


class UnknownBuffer(LookupError):
    """An answer names a buffer id the proxy never gave, or one already resolved."""


class MissResolver(Generic[BridgeRef, AnswerT]):
    def __init__(self, arbiter: Arbiter, miss_timeout: float, max_pending: int = 65536) -> None:
        if miss_timeout <= 0 or max_pending < 1:
            raise ValueError("miss_timeout and max_pending must be positive")
        self.arbiter = arbiter
        self.miss_timeout = miss_timeout
        self.max_pending = max_pending
        self._pending: OrderedDict[int, PendingMiss[BridgeRef, AnswerT]] = OrderedDict()
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._pending)

    def _allocate(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if self._next_id != NO_BUFFER and self._next_id not in self._pending:
                return self._next_id

    def open(self, bridge: BridgeRef, in_port: int, data: bytes, key: int, asked: tuple[str, ...],
             now: float, local_time: datetime.time,
             ) -> tuple[int, list[Resolution[BridgeRef, AnswerT]]]:
        """Start resolving a miss sent to `asked`; returns its buffer id, and the misses that had
        to be given up (as timed out) to stay within max_pending."""
        if not asked:
            raise ValueError("a miss must be asked of at least one controller")
        evicted: list[Resolution[BridgeRef, AnswerT]] = []
        while len(self._pending) >= self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            evicted.append(self._resolve(oldest, now, local_time, timed_out=True,
                                         already_removed=True))
        buffer_id = self._allocate()
        self._pending[buffer_id] = PendingMiss(buffer_id, bridge, in_port, data, key, asked,
                                               now + self.miss_timeout)
        return buffer_id, evicted

    def asked_at(self, buffer_id: int) -> float | None:
        """When a pending miss was sent to its controllers (None: not pending)."""
        miss = self._pending.get(buffer_id)
        return miss.deadline - self.miss_timeout if miss is not None else None

    def answer(self, controller: str, buffer_id: int, answer: AnswerT, now: float,
               local_time: datetime.time) -> Resolution[BridgeRef, AnswerT] | None:
        """Record `controller`'s answer; the resolution if the miss is decided now."""
        miss = self._pending.get(buffer_id)
        if miss is None or controller not in miss.asked:
            raise UnknownBuffer(f"buffer id {buffer_id} is not a pending miss asked of {controller}")
        miss.answers.setdefault(controller, answer)  # a controller's first answer counts
        # Everyone answered (always so with one controller asked: no arbiter call needed), or
        # the controller that would win among all those asked did.
        if len(miss.answers) == len(miss.asked) or (
                self.arbiter.winner(miss.asked, now, local_time) in miss.answers):
            return self._resolve(miss, now, local_time, timed_out=False)
        return None

    def forget_controller(self, controller: str, now: float,
                          local_time: datetime.time) -> list[Resolution[BridgeRef, AnswerT]]:
        """A controller went away: no pending miss waits for it any more."""
        decided = []
        for miss in list(self._pending.values()):
            if controller in miss.asked and controller not in miss.answers:
                miss.asked = tuple(name for name in miss.asked if name != controller)
                if not miss.asked:
                    decided.append(self._resolve(miss, now, local_time, timed_out=True))
                elif len(miss.answers) == len(miss.asked) or (
                        self.arbiter.winner(miss.asked, now, local_time) in miss.answers):
                    decided.append(self._resolve(miss, now, local_time, timed_out=False))
        return decided

    def next_deadline(self) -> float | None:
        return next(iter(self._pending.values())).deadline if self._pending else None

    def expire(self, now: float, local_time: datetime.time) -> list[Resolution[BridgeRef, AnswerT]]:
        """Resolve every miss whose time is up (deadlines are in insertion order)."""
        expired = []
        while self._pending:
            miss = next(iter(self._pending.values()))
            if miss.deadline > now:
                break
            expired.append(self._resolve(miss, now, local_time, timed_out=True))
        return expired

    def _resolve(self, miss: PendingMiss[BridgeRef, AnswerT], now: float, local_time: datetime.time,
                 *, timed_out: bool, already_removed: bool = False) -> Resolution[BridgeRef, AnswerT]:
        if not already_removed:
            del self._pending[miss.buffer_id]
        answers = miss.answers
        if len(answers) > 1:
            winner = self.arbiter.winner(answers, now, local_time)
        else:
            winner = next(iter(answers), None)  # the only answer needs no arbiter
        return Resolution(miss, winner, miss.answers.get(winner) if winner else None, timed_out)
