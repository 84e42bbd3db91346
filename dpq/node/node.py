"""One ``dpq-node``: a list of services started together and stopped together.

Nothing here decides anything about jobs; it builds the parts, wires their
callbacks, and watches the background tasks so a task that dies is logged and
takes the node down instead of leaving it half-alive.

    client ─gRPC─▶ QueueServicer ─▶ NodeOperations ─▶ Proposer ─▶ LeaderRouter ─▶ (leader) driver
                                              │                                        │
                                        Dispatcher ◀── OwnedJobs ◀── QueueState ◀── Applier ◀─┘
    peers ─gRPC─▶ ReplicationServicer ─▶ ReplicaDriver ─▶ Transport ─gRPC─▶ peers
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpq import logs
from dpq.node.applier import Applier
from dpq.node.config import NodeConfig
from dpq.node.dispatcher import Dispatcher
from dpq.node.driver import ReplicaDriver
from dpq.node.leader import LeaderDuties
from dpq.node.operations import NodeOperations
from dpq.node.proposer import LeaderRouter, Proposer
from dpq.node.transport import CHANNEL_OPTIONS, Transport
from dpq.paxos.core import Config, NotLeader, Replica
from dpq.paxos.types import Snapshot
from dpq.paxos.wal import WriteAheadLog
from dpq.queue import snapshot as snapshots
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.services.queue import QueueServicer
from dpq.services.replication import ReplicationServicer
from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.node")

SERVICE_NAMES = (
    queue_pb2.DESCRIPTOR.services_by_name["Queue"].full_name,
    replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name,
)


class Node:
    def __init__(self, config: NodeConfig, dsn: str) -> None:
        self.config = config
        self.dsn = dsn
        os.makedirs(config.data_dir, exist_ok=True)

        self.wal = WriteAheadLog.open(os.path.join(config.data_dir, "wal"))
        recovered = self.wal.recovered
        self.state = QueueState()
        applied = 0
        if recovered.snapshot is not None:
            snapshots.load(recovered.snapshot.data, self.state)
            applied = recovered.snapshot.slot
        self.owned = OwnedJobs(config.node_id, self.state, config.aging_step_ms * 1000)
        self.state.observer = self.owned
        self.owned.rebuild()

        paxos = Config(node_id=config.node_id, peers=tuple(config.peers),
                       election_ticks=config.election_ticks, heartbeat_ticks=config.heartbeat_ticks)
        # The only randomness in the node: election timeouts, seeded per process.
        self.replica = Replica(paxos, random.Random(), recovered=recovered, applied=applied)
        self.transport = Transport(config.node_id, config.peers)
        self.applier = Applier(self.state, self.owned)
        self.driver = ReplicaDriver(self.replica, self.wal, self.transport.send, self.applier.apply,
                                    self.applier.install, self._after_apply,
                                    tick_s=config.tick_ms / 1000)
        self.router = LeaderRouter(self.driver, self.applier, config.peers, self._channel_to)
        self.proposer = Proposer(config.node_id, self.router)
        self.dispatcher = Dispatcher(config.node_id, self.state, self.owned, self.proposer,
                                     max_attempts=config.policy.max_attempts)
        self.ops = NodeOperations(config.node_id, list(config.peers), self.state, self.proposer,
                                  self.dispatcher, config.policy, self._reachable,
                                  self.applier.written)
        self.leader_duties = LeaderDuties(self, dsn)
        self._last_snapshot_slot = applied
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.stopped = asyncio.Event()
        self.failed: BaseException | None = None

    # ------------------------------------------------------------- life cycle

    async def start(self) -> None:
        server = grpc.aio.server(interceptors=[logs.RequestLogInterceptor()],
                                 options=CHANNEL_OPTIONS)
        queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(self.ops, self.cluster_info), server)
        replication_pb2_grpc.add_ReplicationServicer_to_server(
            ReplicationServicer(self.driver, self.transport, self.router), server)
        self._health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(self.config.listen)
        await server.start()
        self._server = server
        self.transport.start()
        self.proposer.start()
        for name, coro in (("paxos-driver", self.driver.run()),
                           ("lease-expiry", self.dispatcher.run_expiry()),
                           ("leader-duties", self.leader_duties.run()),
                           ("leader-watch", self._watch_leader())):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        for service in ("", *SERVICE_NAMES):
            await _set_health(self._health, service, health_pb2.HealthCheckResponse.SERVING)
        log.info("node %d serving on %s", self.config.node_id, self.config.listen)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self.stopped.is_set():
            return
        for service in ("", *SERVICE_NAMES):
            await _set_health(self._health, service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._server is not None:
            await self._server.stop(grace_s)
        self.driver.stop()
        await self.proposer.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.leader_duties.close()
        await self.transport.stop()
        self.driver.close()
        self.stopped.set()

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s died: %r; stopping the node", task.get_name(), exc,
                      exc_info=exc, extra={"route": f"dpq.node.{task.get_name()}"})
            self.failed = exc
            asyncio.get_running_loop().create_task(self.stop(grace_s=0))

    # ---------------------------------------------------------------- wiring

    def _channel_to(self, node_id: int) -> grpc.aio.Channel:
        return self.transport.links[node_id].channel

    def _reachable(self, node_id: int) -> bool:
        return self.transport.reachable(node_id, within_s=self.config.dead_after_s)

    def _after_apply(self) -> None:
        self.applier.after_batch()
        self.dispatcher.wake(self.owned.take_woken())
        if self.state.applied_slot - self._last_snapshot_slot >= self.config.snapshot_every_slots:
            self.take_snapshot()

    def take_snapshot(self) -> None:
        """Save the state machine and drop the log it covers (blocks the loop briefly)."""
        slot = self.state.applied_slot
        self.driver.compact(Snapshot(slot, snapshots.dump(self.state)))
        self._last_snapshot_slot = slot

    async def _watch_leader(self) -> None:
        # Proposals waited on here may never be chosen once the leader changes:
        # fail them so their proposers retry at the new leader at once.
        async with self.driver.leader_changed:
            while True:
                await self.driver.leader_changed.wait()
                self.applier.fail_all(NotLeader(self.replica.leader_hint))

    # ----------------------------------------------------------------- views

    def cluster_info(self) -> queue_pb2.ClusterInfoResponse:
        status = self.replica.status()
        leader = status.leader_hint
        nodes = []
        for node_id, address in sorted(self.config.peers.items()):
            if node_id == self.config.node_id:
                role = status.role.value
                commit, applied = status.commit, self.state.applied_slot
            else:
                role = "leader" if node_id == leader else "follower"
                match = status.progress.get(node_id, (0, 0, False))[0]
                commit = applied = match
            nodes.append(queue_pb2.NodeInfo(node_id=node_id, address=address, role=role,
                                            commit_index=commit, applied_index=applied,
                                            reachable=self._reachable(node_id)))
        return queue_pb2.ClusterInfoResponse(leader_id=leader or 0, nodes=nodes)


async def _set_health(servicer, service: str, status) -> None:
    result = servicer.set(service, status)
    if asyncio.iscoroutine(result):
        await result
