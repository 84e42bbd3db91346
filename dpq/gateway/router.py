"""How a gateway's proposals reach the leader: its ProposeStream, on the leader's peer port
(one long-lived stream per node, ``NodeView.proposals``; unary Propose to a node
that does not serve it).

A gateway presents no cluster id, so a node takes only Enqueue commands from it
(``dpq.services.replication``): everything else a gateway does is forwarded to
a node's client port as the Queue call it is.

The gateway batches with the same :class:`dpq.proposing.proposer.Proposer` a node
uses (many client requests, one Paxos slot, one ``(client_id, seq)`` retried
until some leader commits it); only the way to the leader differs.
"""

from __future__ import annotations

from dpq.errors import Unavailable
from dpq.gateway.monitor import HealthMonitor
from dpq.paxos.core import NotLeader
from dpq.proposing.results import Applied, results_from_pb
from dpq.v1 import replication_pb2


class GatewayRouter:
    def __init__(self, monitor: HealthMonitor) -> None:
        self._monitor = monitor

    def leader_address(self) -> str | None:
        leader = self._monitor.leader()
        return leader.address if leader is not None else None

    async def propose(self, client_id: str, seq: int, batch: bytes, kinds: list[str],
                      timeout_s: float) -> Applied:
        leader = self._monitor.leader()
        proposals = leader.proposals if leader is not None else None
        if proposals is None:
            raise NotLeader(None)
        response = await proposals.propose(
            replication_pb2.ProposeRequest(client_id=client_id, seq=seq, batch=batch), timeout_s)
        if response.duplicate and not response.results:
            raise Unavailable("the batch was committed earlier but its results are no longer "
                              "remembered (its jobs are enqueued)", leader.address)
        return Applied(response.slot, results_from_pb(response.results, kinds))
