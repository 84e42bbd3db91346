"""A clock the test moves: pass ``FakeClock()`` where a component takes a ``dpq.clock.Clock``."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that change only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: components treat 0 as "never" (e.g. a node never heard from).
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
