"""A node's health as the controller sees it: pure, stdlib only, time passed in.

States::

    unknown ──answer──▶ up ──3rd miss in a row──▶ down ──answer──▶ up
       └──────────3rd miss in a row───────────────▲

``unknown`` is a node not polled yet since the daemon started (a node just added starts
``up``: its check was an answer). One answer is enough to be ``up``; ``MISSES_DOWN``
misses in a row (no answer within the timeout, or not a corral answer) make it ``down``,
so with the default 10 s interval a dead node is ``down`` about 30 s after its last
answer. While it is down the polls back off, doubling from the interval, but never
beyond :func:`backoff_cap`, so a node that comes back is seen ``up`` within ~15 s at the
default interval (and within a few intervals at short ones, as in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("unknown", "up", "down")
MISSES_DOWN = 3
#: The longest wait between two polls of a down node, in seconds (see backoff_cap).
BACKOFF_CAP = 15.0


def backoff_cap(interval: float) -> float:
    """The longest delay between polls of a down node: 8 intervals, at most
    ``BACKOFF_CAP`` (but never below the interval itself)."""
    return max(interval, min(BACKOFF_CAP, 8 * interval))


def poll_timeout(interval: float) -> float:
    """How long one poll may take: the interval, within 2..5 s (a short test interval
    must not make a busy node miss; a long one must not let a black hole stall a poll)."""
    return min(5.0, max(2.0, interval))


@dataclass
class Health:
    """Misses, state and the time of the next poll of one node.

    :meth:`answered` and :meth:`missed` are the only writers of ``state``; each returns
    the new state when it changed (the caller publishes it), else None."""

    interval: float
    state: str = "unknown"
    misses: int = 0
    last_seen: float | None = None
    last_error: str | None = None
    next_at: float = 0.0

    def answered(self, now: float) -> str | None:
        """A poll started at ``now`` got a corral answer."""
        self.misses = 0
        self.last_seen = now
        self.last_error = None
        self.next_at = now + self.interval
        return self._become("up")  # unknown/down -> up; up stays up

    def missed(self, now: float, error: str) -> str | None:
        """A poll started at ``now`` got no answer (or not a corral one)."""
        self.misses += 1
        self.last_error = error
        self.next_at = now + self.delay()
        if self.misses >= MISSES_DOWN:
            return self._become("down")  # up/unknown -> down on the 3rd miss in a row
        return None  # fewer misses: the state stays (up stays up, unknown stays unknown)

    def delay(self) -> float:
        """Seconds from a poll's start to the next one's."""
        extra = self.misses - MISSES_DOWN
        if extra < 0:  # not down (yet): the plain interval
            return self.interval
        return min(self.interval * 2 ** min(extra + 1, 16), backoff_cap(self.interval))

    def _become(self, state: str) -> str | None:
        if state == self.state:
            return None
        self.state = state
        return state
