"""Work stealing: a node whose consumers wait moves part of a backlog to itself.

Each node serves only the jobs it owns, so a backlog left on a node whose
consumers are gone or slow would wait while consumers elsewhere sit idle. A
node that has long-polls parked on a queue, and nothing ready in it for
``idle_s``, looks at the replicated state — every replica knows how many ready
jobs each node owns in each queue — and proposes a Reassign of the most urgent
half (up to ``max_steal``) of the largest backlog to itself (not when the queue's
in-flight or rate limit is what keeps them waiting). The Reassign is a
committed command like any other, so every replica agrees on the new owners;
the old owner simply stops seeing those jobs in its heap, and a lease it was
proposing for one of them is refused.
"""

from __future__ import annotations

import asyncio
import logging

from dpq import clock as clocks
from dpq.node.dispatcher import Dispatcher
from dpq.proposing.proposer import Proposer
from dpq.proposing.results import reassigned
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2

log = logging.getLogger("dpq.node.stealer")


class WorkStealer:
    def __init__(self, node_id: int, state: QueueState, owned: OwnedJobs, dispatcher: Dispatcher,
                 proposer: Proposer, *, check_s: float = 0.25, idle_s: float = 0.5,
                 min_backlog: int = 1, max_steal: int = 1000,
                 clock: clocks.Clock = clocks.monotonic,
                 wall_us: clocks.WallClock = clocks.wall_us) -> None:
        self.node_id = node_id
        self.state = state
        self.owned = owned
        self.dispatcher = dispatcher
        self.proposer = proposer
        self.check_s = check_s
        self.idle_s = idle_s
        self.min_backlog = min_backlog
        self.max_steal = max_steal
        self.clock = clock
        self.wall_us = wall_us
        self.stolen = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            await self.check()

    async def check(self) -> None:
        """One look: steal for every queue starving here for ``idle_s`` (by ``clock``)."""
        now = self.clock()
        for queue, since in sorted(self.dispatcher.starving(now).items()):
            wall = self.wall_us()
            if now - since >= self.idle_s and self.owned.ready_count(queue, wall) == 0:
                if self.state.configs and self.state.lease_allowance(queue, wall) == 0:
                    continue  # held back by the queue's limit, not by where its jobs are
                await self._steal(queue)

    async def _steal(self, queue: str) -> None:
        backlogs = self.state.ready_backlogs(queue)
        backlogs.pop(self.node_id, None)
        if not backlogs:
            return
        victim, backlog = max(sorted(backlogs.items()), key=lambda item: item[1])
        if backlog < self.min_backlog:
            return
        jobs = self.state.ready_jobs_of(queue, victim, self.wall_us())
        take = [j.job_id for j in jobs[: min(self.max_steal, (len(jobs) + 1) // 2)]]
        if not take:
            return
        command = log_pb2.Command(reassign=log_pb2.ReassignCommand(
            job_ids=take, owners=[self.node_id] * len(take)))
        try:
            moved = reassigned(await self.proposer.submit(command))
        except Exception as exc:  # noqa: BLE001 - the next check tries again
            log.warning("stealing from node %d failed: %s", victim, exc)
            return
        self.stolen += moved or 0
        self.dispatcher.fed(queue, self.clock())
        log.info("queue %s: took %d of node %d's %d ready jobs for consumers waiting here",
                 queue, moved, victim, backlog)
