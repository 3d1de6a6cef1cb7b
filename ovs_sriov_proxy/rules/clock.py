"""The clock of rule lifetimes: wall-clock seconds that do not jump while the proxy runs.

A learned rule's hard timeout is kept as a wall-clock expiry (`RuleMeta.expires_at`), so that
it keeps counting across a restart, as the backup stores it. Within one run, though, a step of
the system clock (NTP, an operator's `date -s`) must not expire every rule at once or keep them
for an hour longer. So the store reads this clock: the wall time at start-up, advanced by the
monotonic clock.

When the system clock has moved away from it by more than a slew could (`STEP_SECONDS`), the
daemon re-anchors it to the wall clock and moves every rule's lifetime by the same step
(`RuleStore.shift_times`), so that what the backup keeps is in true wall time again: a rule
with 300 s left keeps 300 s left, across the step and across a later restart.
"""

from __future__ import annotations

import time

STEP_SECONDS = 5.0  # NTP slews at most 500 ppm: 5 s apart takes hours without a step

_wall_at_anchor = time.time()
_monotonic_at_anchor = time.monotonic()


def now() -> float:
    """Seconds since the epoch: time.time() at the last anchoring plus the time elapsed since."""
    return _wall_at_anchor + (time.monotonic() - _monotonic_at_anchor)


def drift() -> float:
    """How far the system clock is from this one now (positive: ahead)."""
    return time.time() - now()


def reanchor() -> float:
    """Take the system clock's time again; the step this clock made (new minus old reading)."""
    global _wall_at_anchor, _monotonic_at_anchor
    before = now()
    _wall_at_anchor, _monotonic_at_anchor = time.time(), time.monotonic()
    return now() - before
