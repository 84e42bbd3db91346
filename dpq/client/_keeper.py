"""The lease keeper: extends the leases of held jobs before they run out.

Every ``tick`` it extends, in one ExtendLease RPC, the leases of every held
job past ``fraction`` of its lease (buffered, handed out, or being handled),
for at most ``max_hold`` seconds after the job arrived (times are ``Held.clock``'s,
so a test moves them with a fake clock and calls :meth:`LeaseKeeper.once`). A job
whose lease the server refuses to extend, or whose lease ran out, is no longer held: it may
be handed to another consumer, and its ack will be refused.
"""

from __future__ import annotations

import asyncio
import logging

from dpq.client._held import Held, HoldState
from dpq.client._settle import Settler
from dpq.client.errors import DpqError

log = logging.getLogger("dpq.client")


class LeaseKeeper:
    """Keeps the leases of a consumer's held jobs alive."""

    def __init__(self, held: Held, settler: Settler, lease_s: float, fraction: float) -> None:
        if not 0 < fraction < 1:
            raise ValueError(f"extend_fraction must be between 0 and 1, not {fraction}")
        self._held = held
        self._settler = settler
        self._lease_s = lease_s
        self._margin = lease_s * (1 - fraction)  # extend when this much of the lease is left
        self.tick = min(1.0, max(0.02, self._margin / 4))

    async def run(self) -> None:
        """Forever: drop the expired, extend the due."""
        while True:
            await asyncio.sleep(self.tick)
            await self.once()

    async def once(self) -> None:
        """One round: drop the records whose lease ended, extend the ones due."""
        now = self._held.clock()
        for record in self._held.expired(now):
            if record.state is HoldState.HELD:
                log.warning("the lease of job %d (attempt %d) ran out: it may be handed out "
                            "again", record.pb.job_id, record.pb.attempt)
            record.state = HoldState.LOST
            self._held.discard(record)
        due = self._held.due(now, self._margin)
        if not due:
            return
        try:
            errors = await self._settler.extend(due, max(1, round(self._lease_s * 1000)),
                                                within=max(0.05, self._margin / 2))
        except DpqError as exc:
            log.warning("extending %d leases failed (tried again next tick): %s", len(due), exc)
            return
        for record, error in zip(due, errors, strict=True):
            if error and record.state is HoldState.HELD:
                log.warning("the lease of job %d (attempt %d) is lost (%s)",
                            record.pb.job_id, record.pb.attempt, error)
                record.state = HoldState.LOST
                self._held.discard(record)
