"""How a node's proposals reach the leader: its own driver when it leads, else the
leader's ProposeStream on the peer port (one long-lived stream per leader,
``dpq.proposing.stream``; unary Propose to a leader that does not serve it).

:class:`LeaderRouter` is the node's ``dpq.proposing.proposer.Router`` (the
gateway has its own, ``dpq.gateway.router``), and it serves the leader's side
of Propose (:meth:`LeaderRouter.propose_local`, for ``dpq.services.replication``).
It also tells the proposer when no leader or quorum is reachable from here
(:meth:`LeaderRouter.unavailable_reason`), so public commands fail fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from dpq import clock as clocks
from dpq.node.applier import Applier
from dpq.node.driver import ReplicaDriver
from dpq.paxos.core import NotLeader
from dpq.paxos.types import Proposal
from dpq.proposing.results import Applied, results_from_pb
from dpq.proposing.stream import ProposalStream
from dpq.queue.commands import stamp
from dpq.v1 import replication_pb2, replication_pb2_grpc

#: How long a follower waits to apply a slot its proposal got before answering.
READ_YOUR_WRITES_S = 1.0


now_us = clocks.wall_us


class LeaderRouter:
    """Where proposals go: this node's driver when it leads, else the leader's
    ProposeStream. Also serves the leader side of that RPC."""

    def __init__(self, driver: ReplicaDriver, applier: Applier, addresses: dict[int, str],
                 channel_for: Callable[[int], grpc.aio.Channel], *, cluster_id: str = "",
                 election_timeout_s: float = 1.0,
                 last_heard: Callable[[int], float] | None = None,
                 clock: clocks.Clock = clocks.monotonic,
                 wall_us: clocks.WallClock = clocks.wall_us) -> None:
        """``addresses``: every node's client address (for "the leader is at …");
        ``cluster_id``: presented with every forwarded proposal (it proves a node);
        ``wall_us``: the leader's clock stamped into every proposal (job times)."""
        self.driver = driver
        self.applier = applier
        self.addresses = addresses
        self.cluster_id = cluster_id
        self._channel_for = channel_for
        self._streams: dict[int, ProposalStream] = {}
        # Elections take milliseconds once one starts; an election timeout E
        # without a leader means a campaign failed or none could start. Peers
        # count as heard for 2E, the longest a follower waits to campaign.
        self._grace_s = election_timeout_s
        self._heard_s = 2 * election_timeout_s
        self._last_heard = last_heard or (lambda node_id: 0.0)
        self._clock = clock
        self._wall_us = wall_us
        # A node starts knowing no leader and having heard nobody: the first
        # campaign may start only after 2E.
        self._leaderless_since: float | None = clock() + election_timeout_s

    @property
    def leader_id(self) -> int | None:
        return self.driver.replica.leader_hint

    def note_leader(self, leader: int | None) -> None:
        """The replica's leader changed (``None``: it knows none now)."""
        if leader is not None:
            self._leaderless_since = None
        elif self._leaderless_since is None:
            self._leaderless_since = self._clock()

    def unavailable_reason(self) -> str | None:
        """Why a client's write cannot commit from here, or None while it may.

        Set when this node has known no leader for an election timeout and
        heard from fewer peers than a quorum needs in the last two: an isolated
        node (an old leader that stepped down by check-quorum, or a follower
        whose leader is gone with the rest). A node that hears its peers but
        knows no leader is in an election that may succeed, and waits.
        """
        if self.leader_id is not None:
            self._leaderless_since = None
            return None
        now = self._clock()
        if self._leaderless_since is None:
            self._leaderless_since = now
        leaderless = now - self._leaderless_since
        if leaderless < self._grace_s:
            return None
        me = self.driver.replica.node_id
        others = [n for n in self.addresses if n != me]
        heard = sum(1 for n in others if now - self._last_heard(n) <= self._heard_s)
        needed = len(self.addresses) // 2  # peers besides this node in a quorum
        if heard >= needed:
            return None
        return (f"no leader or quorum is reachable from node {me}: it has known no leader for "
                f"{leaderless:.1f}s and heard from {heard} of the other {len(others)} nodes in "
                f"the last {self._heard_s:g}s (a quorum needs {needed}); try another node")

    def leader_address(self) -> str | None:
        leader = self.leader_id
        return self.addresses.get(leader) if leader is not None else None

    async def propose_local(self, client_id: str, seq: int, batch: bytes,
                            timeout_s: float) -> Applied:
        """Stamp and propose on this (leader) node; wait until applied here."""
        future = self.applier.expect(client_id, seq)
        try:
            self.driver.propose(Proposal(client_id, seq, stamp(self._wall_us(), batch)))
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            self.applier.forget(client_id, seq, future)

    async def propose(self, client_id: str, seq: int, batch: bytes, kinds: list[str],
                      timeout_s: float) -> Applied:
        leader = self.leader_id
        if leader is None:
            raise NotLeader(None)
        if leader == self.driver.replica.node_id:
            return await self.propose_local(client_id, seq, batch, timeout_s)
        stream = self._streams.get(leader)
        if stream is None:
            stub = replication_pb2_grpc.ReplicationStub(self._channel_for(leader))
            stream = self._streams[leader] = ProposalStream(stub)
        response = await stream.propose(
            replication_pb2.ProposeRequest(client_id=client_id, seq=seq, batch=batch,
                                           cluster_id=self.cluster_id),
            timeout_s)
        # Read your writes: answer once this node has applied the slot too, so a
        # Stats or Dequeue here right after sees it. Bounded: a lagging node
        # still answers, it catches up in the background.
        try:
            await asyncio.wait_for(self.applier.applied.wait_for(response.slot), READ_YOUR_WRITES_S)
        except TimeoutError:
            pass
        if response.duplicate and not response.results:
            return Applied(response.slot, None)
        return Applied(response.slot, results_from_pb(response.results, kinds))

    @property
    def streams_opened(self) -> int:
        """ProposeStreams opened to leaders so far (a counter: 1 per leader while all is well)."""
        return sum(stream.opened for stream in self._streams.values())

    def close(self) -> None:
        """End the proposal streams to other nodes (the node is stopping)."""
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
