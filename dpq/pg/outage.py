"""Back-off, and a few log lines, for a run of failures against PostgreSQL.

An outage is the time from the first failed try after a success to the next
success. It is logged twice: one ERROR line when it starts, one WARNING line
when it ends (WARNING, not INFO, so it shows at the node's default log level),
with a reminder at WARNING every ``remind_every_s`` in between — never a line
per try. The delay between tries doubles from ``first_delay_s`` up to
``max_delay_s``.

Time is a parameter (``clock``), so the tests drive it by hand.
"""

from __future__ import annotations

import logging

from dpq import clock as clocks

#: Longest wait between two tries: short enough that the writer notices a
#: server that is back within seconds, long enough to cost nothing while down.
MAX_DELAY_S = 5.0
REMIND_EVERY_S = 60.0


class Outage:
    def __init__(self, log: logging.Logger, what: str, *, first_delay_s: float = 0.1,
                 max_delay_s: float = MAX_DELAY_S, remind_every_s: float = REMIND_EVERY_S,
                 clock: clocks.Clock = clocks.monotonic) -> None:
        self._log = log
        self._what = what
        self._first = first_delay_s
        self._max = max_delay_s
        self._remind = remind_every_s
        self._clock = clock
        self._since: float | None = None
        self._reminded = 0.0
        self._delay = 0.0
        self.tries = 0  # failed tries in the current outage
        self.outages = 0  # outages so far (for tests and metrics)

    @property
    def down(self) -> bool:
        return self._since is not None

    def down_for(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, reason: str, detail: str = "") -> float:
        """A try failed: log if this starts an outage; return the delay before the next try."""
        now = self._clock()
        self.tries += 1
        if self._since is None:
            self._since = self._reminded = now
            self._delay = self._first
            self.outages += 1
            self._log.error("%s failed: %s; %sretrying with back-off (up to %gs between tries), "
                            "one line when it works again", self._what, reason,
                            f"{detail}; " if detail else "", self._max)
            return self._delay
        self._delay = min(self._delay * 2, self._max)
        if now - self._reminded >= self._remind:
            self._reminded = now
            self._log.warning("%s still failing after %.0fs and %d tries: %s%s", self._what,
                              now - self._since, self.tries, reason,
                              f"; {detail}" if detail else "")
        return self._delay

    def recovered(self, detail: str = "") -> None:
        """A try worked: log the end of the outage, if there was one."""
        if self._since is None:
            return
        self._log.warning("%s works again after %.1fs and %d failed tries%s", self._what,
                          self._clock() - self._since, self.tries,
                          f"; {detail}" if detail else "")
        self._since = None
        self.tries = 0
