"""Liveness of one OpenFlow connection, shared by both session kinds: a pure FSM that takes `now`.

A peer that has said nothing for `echo_interval` gets one ECHO_REQUEST; one silent for
`dead_interval` is dead. Anything received resets both. Before the session is established, the
handshake deadline (`hello_timeout` from the start) is the only one that counts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionTiming:
    hello_timeout: float = 5.0  # a peer not through the handshake by then is dropped
    echo_interval: float = 5.0  # an idle peer is probed with ECHO_REQUEST after this
    dead_interval: float = 15.0  # a peer silent for this long is declared dead


class Due(enum.Enum):
    NOTHING = "nothing"
    PROBE = "probe"  # send an ECHO_REQUEST now
    HANDSHAKE_EXPIRED = "handshake expired"
    DEAD = "dead"


class Keepalive:
    def __init__(self, timing: SessionTiming, now: float) -> None:
        self.timing = timing
        self.started = now
        self.last_rx = now
        self._probe_sent = False

    def received(self, now: float) -> None:
        self.last_rx = now
        self._probe_sent = False

    def deadline(self, established: bool) -> float:
        if not established:
            return self.started + self.timing.hello_timeout
        interval = self.timing.dead_interval if self._probe_sent else self.timing.echo_interval
        return self.last_rx + interval

    def check(self, now: float, established: bool) -> Due:
        if not established and now >= self.started + self.timing.hello_timeout:
            return Due.HANDSHAKE_EXPIRED
        if now - self.last_rx >= self.timing.dead_interval:
            return Due.DEAD
        if not self._probe_sent and now - self.last_rx >= self.timing.echo_interval:
            self._probe_sent = True
            return Due.PROBE
        return Due.NOTHING

    def silence(self, now: float) -> float:
        return now - self.last_rx
