"""The clock of rule lifetimes: wall-clock seconds that do not jump while the proxy runs.

A learned rule's hard timeout is kept as a wall-clock expiry (`RuleMeta.expires_at`), so that
it keeps counting across a restart, as the backup stores it. Within one run, though, a step of
the system clock (NTP, an operator's `date -s`) must not expire every rule at once or keep them
for an hour longer. So the store reads this clock: the wall time at start-up, advanced by the
monotonic clock. A step is only taken into account at the next start.
"""

from __future__ import annotations

import time

_WALL_AT_START = time.time()
_MONOTONIC_AT_START = time.monotonic()


def now() -> float:
    """Seconds since the epoch, as time.time() was at start-up plus the time elapsed since."""
    return _WALL_AT_START + (time.monotonic() - _MONOTONIC_AT_START)
