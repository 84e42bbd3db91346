"""When a periodic job fires: occurrences of a cron expression or a fixed period, and
each tick's jitter. Pure and deterministic (``croniter`` is plain date arithmetic),
so every replica computes the same ticks from the same schedule and leader times.

Times are microseconds since the Unix epoch, UTC. A cron expression has exactly
five fields (minute hour day-of-month month day-of-week), evaluated in UTC.

A tick's fire time is its *nominal* occurrence plus a jitter of 0..``jitter_ms``
drawn from a stable hash of the schedule's name and the nominal time (blake2b,
never Python's ``hash()`` or ``random``): the same on every replica and in every
process, and different between schedules that share an occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from itertools import pairwise

from croniter import croniter

DAY_MS = 24 * 3600 * 1000
#: A period: at least a second, at most 366 days.
MIN_EVERY_MS = 1000
MAX_EVERY_MS = 366 * DAY_MS
#: ``next_fire_at_us`` of a schedule that has no occurrence left (a cron expression
#: that matches no date, or one past the year 2200).
NEVER = 0
#: Past this (2200-01-01, ``rules.MAX_CLOCK_US``) an occurrence counts as never.
LAST_US = 7_258_118_400 * 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a five-field cron expression croniter can iterate, or None."""
    fields = expr.split()
    if len(fields) != 5:
        return f"{len(fields)} fields; a cron expression has 5 (minute hour day month weekday)"
    try:
        if not croniter.is_valid(expr):
            return "croniter cannot parse it"
    except Exception as exc:  # noqa: BLE001 - whatever the text, a clear refusal
        return f"croniter cannot parse it ({type(exc).__name__})"
    return None


def _cron_after(expr: str, after_us: int) -> int:
    """The first occurrence strictly after ``after_us``, or NEVER."""
    try:
        start = _EPOCH + timedelta(microseconds=after_us)
        found = croniter(expr, start).get_next(datetime)
    except Exception:  # noqa: BLE001 - no date matches (Feb 30), or out of range
        return NEVER
    at = (found.astimezone(UTC) - _EPOCH) // _US
    return at if 0 < at <= LAST_US else NEVER


def first_at_or_after(cron: str, every_ms: int, start_us: int) -> int:
    """The first occurrence at or after ``start_us`` (a period's first one is ``start_us``)."""
    if every_ms:
        return start_us if start_us <= LAST_US else NEVER
    return _cron_after(cron, start_us - 1)


def next_after(cron: str, every_ms: int, origin_us: int, after_us: int) -> int:
    """The first occurrence strictly after ``after_us``; a period counts from ``origin_us``
    (its first occurrence), so occurrences stay on the same grid however late ticks run."""
    if every_ms:
        period = every_ms * 1000
        steps = max(0, (after_us - origin_us) // period + 1)
        at = origin_us + steps * period
        return at if at <= LAST_US else NEVER
    return _cron_after(cron, after_us)


def jitter_us(name: str, nominal_us: int, jitter_ms: int) -> int:
    """A stable pseudo-random 0..``jitter_ms`` ms (in µs) for one tick of one schedule."""
    if not jitter_ms:
        return 0
    digest = blake2b(name.encode() + nominal_us.to_bytes(8, "little", signed=True),
                     digest_size=8).digest()
    return int.from_bytes(digest, "little") % (jitter_ms * 1000 + 1)


def shortest_gap_ms(cron: str, every_ms: int, from_us: int, looks: int = 16) -> int | None:
    """A schedule's interval for the jitter limit: ``every_ms``, or the shortest gap
    between a cron expression's next ``looks`` occurrences after ``from_us`` (None:
    fewer than two occurrences)."""
    if every_ms:
        return every_ms
    times, at = [], from_us
    for _ in range(looks):
        at = _cron_after(cron, at)
        if at == NEVER:
            break
        times.append(at)
    if len(times) < 2:
        return None
    return min(b - a for a, b in pairwise(times)) // 1000
